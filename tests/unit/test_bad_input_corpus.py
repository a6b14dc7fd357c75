"""Bad input through the real CLI: one clear message, the documented exit code, no traceback.

A table of config-level and command-line mistakes that `tests/unit/test_config.py` does not
already cover, each run as `python -m homekube VERB --config FILE` in a subprocess. The
host-level half of the corpus (unreachable, refused, no sudo, wrong address, ...) needs real
hosts and lives in `tests/rig/test_faults.py`.

Exit codes (cli/main.py, errors.py): 0 ok (warnings go to stderr as `warning: ...`), 2 the
config or the command line is wrong, 3 a host cannot be reached or used. A config problem is
reported as `FILE:LINE:COLUMN: PATH: message`, every problem at once.

No case reaches the network: the config's hosts are documentation addresses and its SSH key
does not exist, so even a case that unexpectedly validated would stop at "SSH key ... does not
exist" before any connection is opened.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import GOOD

NO_KEY = "/nonexistent/homekube-corpus/id_ed25519"
BASE = GOOD.replace("key: ~/.ssh/id_ed25519", f"key: {NO_KEY}")
assert BASE != GOOD
LOC = re.compile(r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): ")


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def with_line(after: str, line: str, text: str = BASE) -> str:
    """Insert `line` right after the line that starts with `after`."""
    out = []
    for ln in text.splitlines(keepends=True):
        out.append(ln)
        if ln.startswith(after):
            out.append(line + "\n")
    assert len(out) > len(text.splitlines()), after
    return "".join(out)


Setup = Callable[[Path], Path]


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes | Setup
    fragments: tuple[str, ...]
    exit: int = 2
    line: int | None = None  # line of the (first matching) problem, when the file has one
    problems: int | None = 1  # how many problems the message lists (None: don't count)
    verb: tuple[str, ...] = ("plan",)
    hint: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _dir(tmp: Path) -> Path:
    d = tmp / "cluster.yaml"
    d.mkdir()
    return d


def _missing(tmp: Path) -> Path:
    return tmp / "no-such-cluster.yaml"


def _known_hosts_missing(tmp: Path) -> Path:
    key = tmp / "id_ed25519"
    key.write_text("not really a key, but the file exists\n")
    key.chmod(0o600)
    cfg = tmp / "cluster.yaml"
    cfg.write_text(edit(f"key: {NO_KEY}", f"key: {key}").replace(
        "knownHosts: ~/.ssh/known_hosts", f"knownHosts: {tmp}/no_known_hosts"))
    return cfg


DEEP = "name: a\nhosts: " + "[" * 300 + "]" * 300 + "\n"
TWO_ETCD = edit("roles: [worker]", "roles: [etcd, worker]")

CASES: list[Case] = [
    # ---------------------------------------------------------------- YAML and the file itself
    Case("duplicate key", edit("name: krusty\n", "name: krusty\nname: bart\n"), ("duplicate key",), line=2),
    Case("unclosed quote", edit('version: "1.36"', 'version: "1.36'), ("YAML syntax",)),
    Case("scalar document", "just some words\n", ("top level must be a mapping",), line=1),
    Case("comments only", "# nothing here yet\n\n", ("the file is empty",), line=1),
    Case("not UTF-8", b"name: caf\xe9\nhosts: []\n", ("cannot read",), line=1),
    Case("config path is a directory", _dir, ("cannot read",), line=1),
    Case("config file missing", _missing, ("file not found",), line=1,
         hint="create one with `homekube init > cluster.yaml`"),
    Case("two YAML documents", BASE + "---\nname: other\n", ("YAML syntax", "another document"), line=13),
    Case("undefined alias", BASE + "extra: *nope\n", ("undefined alias",), line=13),
    Case("nested too deeply", DEEP, ("nested too deeply",), line=1),
    # ------------------------------------------------------------------- types and ranges
    Case("hosts is a mapping", BASE.split("hosts:\n")[0] + "hosts: {krusty: 192.0.2.54}\n",
         ("hosts: Input should be a valid tuple",), line=10),
    Case("no hosts", BASE.split("hosts:\n")[0] + "hosts: []\n", ("hosts: must not be empty",), line=10),
    Case("ssh port out of range", edit("ssh: {user: root,", "ssh: {user: root, port: 70000,"),
         ("ssh.port", "less than or equal to 65535"), line=8),
    Case("snapshotCount below minimum", edit("snapshotCount: 5000", "snapshotCount: 10"),
         ("etcd.snapshotCount", "greater than or equal to 100"), line=6),
    Case("electionMs above maximum", edit("electionMs: 1000", "electionMs: 60000"),
         ("etcd.electionMs", "less than or equal to 50000"), line=6),
    Case("enabled is not a boolean", edit('kubernetes: {version: "1.36",', 'kubernetes: {enabled: maybe, version: "1.36",'),
         ("kubernetes.enabled", "valid boolean"), line=2),
    Case("ipvs proxy mode", edit('kubernetes: {version: "1.36",', 'kubernetes: {proxyMode: ipvs, version: "1.36",'),
         ("kubernetes.proxyMode", "'iptables' or 'nftables'"), line=2),
    Case("token lifetime too long", edit("access: read-only}", "access: read-only, tokenHours: 48}"),
         ("ui.tokenHours", "less than or equal to 24"), line=7),
    Case("bad etcd version", edit("etcd: {", 'etcd: {version: "3.x", '), ("etcd.version", "not an etcd version"), line=6),
    Case("bad tarball sha256", edit("etcd: {", "etcd: {sha256: ABC123, "), ("etcd.sha256", "64 lowercase hex"), line=6),
    Case("cluster name not a DNS label", edit("name: krusty\n", "name: Krusty_Cluster\n"), ("name: must be a lowercase DNS label",), line=1),
    Case("role listed twice", edit("roles: [worker]", "roles: [worker, worker]"), ("a role is listed twice",), line=12),
    Case("typo in a host key", edit("address: 192.0.2.55", "adress: 192.0.2.55"),
         ("hosts[1].adress: unknown key", "hosts[1].address: required key is missing"), line=12, problems=2),
    # --------------------------------------------------------------------- networks and hosts
    Case("three pod networks", edit("pods: [10.42.0.0/16, fd42:42::/56]", "pods: [10.42.0.0/16, fd42:42::/56, 10.43.0.0/16]"),
         ("network.pods", "at most 2"), line=4),
    Case("IPv6 pod and service networks overlap", edit("fd42:96::/112", "fd42:42::/112"),
         ("network.services[1]", "overlaps fd42:42::/56"), line=5),
    Case("IPv6 service network too large", edit("fd42:96::/112", "fd42:96::/64"), ("too large", "/108"), line=3),
    Case("pod network smaller than a Calico block", edit("10.42.0.0/16", "10.42.0.0/27"),
         ("pod network 10.42.0.0/27 is too small", "/26"), line=3),
    Case("address6 is an IPv4 address", edit('address6: "2001:db8::55"', 'address6: "192.0.2.99"'),
         ("hosts[1].address6", "not a valid IP address"), line=12),
    Case("address6 beside an IPv6 address", edit("address: 192.0.2.55", 'address: "2001:db8::56"'),
         ("address is IPv6 already", "needs an IPv4 address"), line=12, problems=2),
    Case("IPv4 pods but an IPv6-only host", edit('address: 192.0.2.55, address6: "2001:db8::55"', 'address: "2001:db8::55"'),
         ("hosts[1].address: the pod network has IPv4: this host needs an IPv4 address",), line=12),
    Case("host IPv6 inside the pod network", edit('address6: "2001:db8::55"', 'address6: "fd42:42::55"'),
         ("fd42:42::55 lies inside network.pods[1]",), line=12),
    Case("sysctl value with a line break", BASE + 'hostPrep: {sysctls: {net.core.somaxconn: "1024\\nkernel.panic = 0"}}\n',
         ("hostPrep.sysctls", "not a sysctl value"), line=13),
    Case("empty sysctl value", BASE + "hostPrep: {sysctls: {net.core.somaxconn: ''}}\n",
         ("hostPrep.sysctls", "not a sysctl value"), line=13),
    # ----------------------------------------------- kubernetes.endpoint (a keepalived virtual address)
    Case("even etcd members with a virtual endpoint",
         edit('controlPlaneEndpoint: "k8s.home.arpa:6443"', "endpoint: {kind: vip, address: 192.0.2.50}", TWO_ETCD),
         ("2 etcd members tolerate no more failures than 1", "refused with kubernetes.endpoint"), line=10),
    Case("virtual endpoint on a host's address",
         edit('controlPlaneEndpoint: "k8s.home.arpa:6443"', "endpoint: {kind: vip, address: 192.0.2.55}"),
         ("kubernetes.endpoint.address", "is the address of hosts[1] (bart)"), line=2),
    Case("virtual endpoint beside controlPlaneEndpoint",
         edit('controlPlaneEndpoint: "k8s.home.arpa:6443"',
              'controlPlaneEndpoint: "k8s.home.arpa:6443", endpoint: {kind: vip, address: 192.0.2.50}'),
         ("set either `endpoint`",), line=2),
    Case("virtual endpoint given as a name", edit('controlPlaneEndpoint: "k8s.home.arpa:6443"',
                                                  "endpoint: {kind: vip, address: k8s.home.arpa}"),
         ("kubernetes.endpoint.address",), line=2),
    # ------------------------------------------------ warnings: documented as exit 0, on stderr
    Case("even etcd member count", TWO_ETCD, ("warning: ", "2 etcd members tolerate no more failures than 1; use an odd count"),
         exit=0, line=10, verb=("render", "--out", "{tmp}/out")),
    Case("distro etcd package with Kubernetes", edit("etcd: {", "etcd: {install: package, "),
         ("warning: ", "etcd.install: distro etcd packages are 3.4.x"), exit=0, line=6, verb=("render", "--out", "{tmp}/out")),
    # ------------------------------------------------------------------------- command line
    Case("plan --output yaml", BASE, ("--output must be text or json",), problems=None, verb=("plan", "--output", "yaml")),
    Case("unknown option", BASE, ("No such option",), problems=None, verb=("apply", "--frobnicate")),
    # --------------------------------------------------- SSH files, found missing before any connection
    Case("SSH key file missing", BASE, (f"SSH key {NO_KEY} does not exist", "2 hosts cannot be used"),
         exit=3, problems=None, verb=("check",)),
    Case("known_hosts file missing", _known_hosts_missing, ("no_known_hosts does not exist",),
         exit=3, problems=None, verb=("apply",)),
]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HOMEKUBE_DEBUG",)}
    return subprocess.run([sys.executable, "-m", "homekube", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60, env={**env, "COLUMNS": "200"})


def materialise(case: Case, tmp: Path) -> Path:
    if callable(case.text):
        return case.text(tmp)
    p = tmp / "cluster.yaml"
    if isinstance(case.text, bytes):
        p.write_bytes(case.text)
    else:
        p.write_text(case.text)
    return p


def test_corpus_is_big_and_distinct() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    texts = [c.text for c in CASES if isinstance(c.text, str) and c.verb == ("plan",)]
    assert len(set(texts)) == len(texts), "two cases test the same document"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_message(case: Case, tmp_path: Path) -> None:
    cfg = materialise(case, tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.verb]
    res = run_cli(*args, "--config", str(cfg), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == case.exit, (case.id, res.returncode, out)
    assert "Traceback" not in out and "Error:" not in res.stdout, out
    for fragment in case.fragments:
        assert fragment in res.stderr, (case.id, fragment, res.stderr)
    if case.exit != 0:
        # one clear message: a single `error:` line (or click's one `Error:` line for a bad option)
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith(("error:", "Error:"))]
        assert len(errors) == 1, (case.id, res.stderr)
        assert not res.stdout.strip() or case.verb[0] == "check", (case.id, res.stdout)
    else:
        assert "error" not in res.stderr.lower(), res.stderr
    if case.hint:
        assert f"hint: {case.hint}" in res.stderr, res.stderr
    located = [ln for ln in res.stderr.splitlines() if LOC.match(ln.removeprefix("warning: "))]
    if case.line is not None:
        first = next(ln for ln in located if any(f in ln for f in case.fragments) or not case.fragments)
        m = LOC.match(first.removeprefix("warning: "))
        assert m is not None
        assert m["file"] == str(cfg), first
        assert int(m["line"]) == case.line and int(m["col"]) >= 1, (case.id, first)
    if case.problems is not None and case.exit == 2:
        n = case.problems
        assert f"{n} problem{'s' if n != 1 else ''} in the configuration" in res.stderr, res.stderr
        assert len(located) == n, (case.id, located)
    if case.exit == 0:
        n = sum(1 for _ in (tmp_path / "out").rglob("*") if _.is_file())
        assert n > 0 and f"wrote {n} files" in res.stdout, res.stdout
