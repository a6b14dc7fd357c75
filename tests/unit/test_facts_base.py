"""Fact composition: one script, sections split back by a nonce marker (run for real in sh)."""

from __future__ import annotations

import subprocess

from homekube.facts.base import Fact, complete, compose, parse_all, shell_quote, split


def test_compose_runs_in_one_exec_and_splits() -> None:
    facts = [
        Fact("a", "echo one; echo two", lambda t: t.splitlines()),
        Fact("b", "exit 3", lambda t: t),  # a failing fact does not stop the others
        Fact("c", "printf 'x\\ty'", lambda t: t.split("\t")),
    ]
    script, marker = compose(facts, nonce="test")
    out = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=True).stdout
    assert complete(out, marker)
    parsed = parse_all(facts, out, marker)
    assert parsed == {"a": ["one", "two"], "b": "", "c": ["x", "y"]}


def test_split_ignores_foreign_markers() -> None:
    out = "junk\n@@m@@ a\n1\n@@other@@ b\n@@m@@ __end__\n"
    assert split(out, "@@m@@") == {"a": "1\n@@other@@ b"}


def test_shell_quote_roundtrip() -> None:
    for s in ["plain", "it's", "a b", "$(rm -rf /)", "`x`", "\"q\""]:
        out = subprocess.run(["sh", "-c", f"printf %s {shell_quote(s)}"], capture_output=True, text=True).stdout
        assert out == s


def test_fsync_probe_runs_and_parses(tmp_path: object) -> None:
    """The disk probe really fdatasyncs in the data dir's filesystem (here: a temp dir)."""
    from pathlib import Path

    from homekube.facts.disk import fsync_latency

    d = Path(str(tmp_path)) / "etcd-data-not-yet-created"
    fact = fsync_latency(str(d))
    script, marker = compose([fact], nonce="t")
    out = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=True).stdout
    lat = parse_all([fact], out, marker)["fsync"]
    assert lat.p99_ms is not None and lat.p99_ms > 0 and lat.mean_ms is not None
    assert not list(Path(str(tmp_path)).iterdir())  # the scratch file is gone


def test_files_fact_runs_for_real(tmp_path: object) -> None:
    """The batched files fact on this machine: stat/hash/content, secrets unread, absent paths."""
    import hashlib
    import os
    from pathlib import Path

    from homekube.facts.system import files

    d = Path(str(tmp_path))
    (d / "plain.conf").write_bytes(b"a = 1\n")
    (d / "key.pem").write_bytes(b"SECRET")
    (d / "key.pem").chmod(0o600)
    (d / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (d / "sub").mkdir()
    fact = files({str(d / "plain.conf"): False, str(d / "key.pem"): True, str(d / "big.bin"): False,
                  str(d / "sub"): False, str(d / "absent"): False})
    script, marker = compose([fact], nonce="t")
    out = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=True).stdout
    got = parse_all([fact], out, marker)["files"]
    plain = got[str(d / "plain.conf")]
    assert plain is not None and plain.content == b"a = 1\n" and plain.kind == "file"
    assert plain.sha256 == hashlib.sha256(b"a = 1\n").hexdigest()
    key = got[str(d / "key.pem")]
    assert key is not None and key.content is None and key.mode == 0o600
    assert key.sha256 == hashlib.sha256(b"SECRET").hexdigest()
    big = got[str(d / "big.bin")]
    assert big is not None and big.content is None and big.size == 2 * 1024 * 1024
    sub = got[str(d / "sub")]
    assert sub is not None and sub.kind == "dir"
    assert got[str(d / "absent")] is None


def test_files_fact_reads_contents_without_tar(tmp_path: object) -> None:
    """A host without tar (EL minimal before host prep): one base64 per file, same result."""
    import shutil
    from pathlib import Path

    from homekube.facts.system import files, parse_files

    d = Path(str(tmp_path))
    (d / "a.conf").write_bytes(b"a = 1\n")
    (d / "b.conf").write_bytes(b"")
    tools = d / "bin"
    tools.mkdir()
    for tool in ("stat", "find", "xargs", "sha256sum", "sed", "base64"):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    paths = {str(d / "a.conf"): False, str(d / "b.conf"): False}
    fact = files(paths)
    out = subprocess.run(["/bin/bash", "-c", fact.command], capture_output=True, text=True,
                         check=True, env={"PATH": str(tools)}).stdout
    assert "\nC\t" in "\n" + out and "T\t" not in out
    got = parse_files(out, list(paths))
    a, b = got[str(d / "a.conf")], got[str(d / "b.conf")]
    assert a is not None and a.content == b"a = 1\n"
    assert b is not None and b.content == b""


def test_held_packages_count_as_installed() -> None:
    """`apt-mark hold` turns dpkg's status into "hi": still installed (seen on a real cluster,
    where held kubelet/kubeadm/kubectl were planned for install again)."""
    from homekube.facts.system import parse_packages

    got = parse_packages(
        "kubelet\t1.36.3-1.1\thi \nkubectl\t1.36.3-1.1\tii \netcd-server\t3.4.23\trc \n"
        "cri-o\t\tun \n"
    )
    assert got["kubelet"].version == "1.36.3-1.1"
    assert got["kubectl"].version == "1.36.3-1.1"
    assert got["etcd-server"].version is None
    assert got["cri-o"].version is None
