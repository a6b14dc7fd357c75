"""Secret hygiene on real hosts: no private key in any output, and every key file locked down.

One fresh lab brought up to three etcd members with debug logging on (`--debug` and
HOMEKUBE_DEBUG=1), then every verb that shows something (plan, plan -o json, status, check,
certs, render, backup, a renewal that writes new keys, and an apply that fails on a host). All
their stdout and stderr is searched for every private key on the hosts and on this machine, in
each form it exists or travels in: the PEM body, the file as the upload script encodes it
(base64 of the whole file) and the raw private number (hex and base64). No 40-character piece
of any of them may appear, nor a `PRIVATE KEY-----` marker at all.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from homekube import lab as hklab
from homekube.config.loader import load
from homekube.pki.spec import ETCD_PKI, KUBEADM_PKI, member_files
from tests.rig.helpers import plan_json, run_on, write_config

pytestmark = pytest.mark.rig

HOSTS = ("h1", "h2", "h3")
WINDOW = 40
PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n-----END \1-----", re.S)
MARKER = "PRIVATE KEY-----"


def debug_cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """The CLI with every debug switch on."""
    env = {**os.environ, "COLUMNS": "200", "HOMEKUBE_DEBUG": "1"}
    return subprocess.run([sys.executable, "-m", "homekube", "--debug", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def windows(text: str) -> set[str]:
    return {text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1)}


def private_number(pem: bytes) -> bytes:
    """The secret itself: the EC scalar, RSA d or Ed25519 seed, as big-endian bytes."""
    if b"OPENSSH PRIVATE KEY" in pem:
        key = serialization.load_ssh_private_key(pem, password=None)
    else:
        key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.private_numbers().private_value
    elif isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers().d
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    else:  # pragma: no cover - no other key type is made here
        raise AssertionError(f"unexpected key type {type(key).__name__}")
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


@dataclass
class Secrets:
    """Every private key: where it lives, and the 40-char pieces that would give it away."""

    files: dict[str, bytes] = field(default_factory=dict)  # "host:path" -> content
    public: set[str] = field(default_factory=set)  # pieces of public material (certs, pubkeys)

    def add(self, where: str, content: bytes) -> None:
        assert b"PRIVATE KEY-----" in content, where
        self.files[where] = content

    def pieces(self) -> dict[str, str]:
        """piece -> which key and form it comes from (pieces also in public material dropped:
        an EC private key carries its public point, which the certificate shows too)."""
        out: dict[str, str] = {}
        for where, content in self.files.items():
            forms = {"PEM body": "".join(squash(m.group(2)) for m in PEM.finditer(content.decode())),
                     "upload encoding": base64.b64encode(content).decode()}
            secret = private_number(content)
            forms["raw hex"] = secret.hex()
            forms["raw base64"] = base64.b64encode(secret).decode()
            for form, text in forms.items():
                assert len(text) >= WINDOW, (where, form)
                for piece in windows(text) - self.public:
                    out[piece] = f"{where} ({form})"
        return out


def public_pieces(texts: list[str]) -> set[str]:
    out: set[str] = set()
    for t in texts:
        bodies = [squash(m.group(2)) for m in PEM.finditer(t)]
        for b in [*bodies, base64.b64encode(t.encode()).decode(), squash(t)]:
            out |= windows(b)
    return out


def leaks(text: str, pieces: dict[str, str]) -> list[str]:
    flat = squash(text)
    found = {pieces[flat[i:i + WINDOW]] for i in range(len(flat) - WINDOW + 1) if flat[i:i + WINDOW] in pieces}
    return sorted(found)


@pytest.fixture(scope="module")
def brought_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path, dict[str, str]]]:
    """A fresh lab with three etcd members, and the output of every verb run against it."""
    hklab.down()
    d = tmp_path_factory.mktemp("secrets")
    base = d / "homekube-lab.yaml"
    lab = hklab.up(3, config_path=base)
    cfg = write_config(base, d / "three.yaml", etcd_hosts=HOSTS)
    outputs: dict[str, str] = {}

    def run(name: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        res = debug_cli(*args)
        outputs[name] = f"$ homekube --debug {' '.join(args)}\n{res.stdout}\n{res.stderr}"
        assert res.returncode == expect, (name, res.returncode, res.stdout[-2000:], res.stderr[-3000:])
        return res

    c = str(cfg)
    run("plan before apply", "plan", "--config", c, "--verbose")
    run("apply", "apply", "--config", c)
    run("apply again", "apply", "--config", c)
    run("plan", "plan", "--config", c, "--verbose")
    run("plan json", "plan", "--config", c, "--output", "json")
    run("status", "status", "--config", c)
    run("status json", "status", "--config", c, "--output", "json")
    run("check", "check", "--config", c)
    run("certs", "certs", "--config", c)
    run("certs json", "certs", "--config", c, "--output", "json")
    run("render", "render", "--config", c, "--out", str(d / "rendered"))
    run("backup", "backup", "--config", c)
    # new keys written on every member (rolling), then a fresh key for h2 that cannot land:
    # /etc/etcd/pki is a file, so the apply fails on h2 and prints the failing step's output
    run("certs renew", "certs", "renew", "--config", c, "--within", "400", "--yes")
    run_on("h2", f"rm -f {KUBEADM_PKI}/etcd/server.key && mv {ETCD_PKI} /root/etcd-pki.moved && "
             f"echo not a directory > {ETCD_PKI}")
    run("plan with a missing key", "plan", "--config", c, "--verbose")
    failed = run("failing apply", "apply", "--config", c, expect=1)
    assert "error: h2: " in failed.stderr, failed.stderr
    run_on("h2", f"rm -f {ETCD_PKI} && mv /root/etcd-pki.moved {ETCD_PKI}")
    run("apply after the failure", "apply", "--config", c)
    assert plan_json(cfg)["changes"] == 0
    yield lab, cfg, outputs


def host_private_keys(name: str) -> list[str]:
    res = run_on(name, "grep -rlI -e '-----BEGIN [A-Z ]*PRIVATE KEY-----' /etc /root /var/lib /usr/local /home /opt "
                   "2>/dev/null | sort; true")
    return [p for p in res.stdout.split() if p]


def collect_secrets(lab: hklab.Lab, cfg: Path) -> Secrets:
    s = Secrets()
    public_texts: list[str] = []
    for n in HOSTS:
        for path in host_private_keys(n):
            s.add(f"{n}:{path}", run_on(n, f"cat {path}").stdout.encode())
        certs = run_on(n, "cat /etc/kubernetes/pki/*.crt /etc/kubernetes/pki/etcd/*.crt /etc/etcd/pki/*.crt "
                      "/etc/ssh/*.pub 2>/dev/null; true").stdout
        public_texts.append(certs)
    state = Path(load(cfg).state_dir)
    local = [f for f in state.rglob("*") if f.is_file() and MARKER.encode() in f.read_bytes()]
    assert state / "pki" / "etcd" / "ca.key" in local, local
    for f in local:  # the etcd CA key and the operator's client key
        s.add(f"local:{f.relative_to(state)}", f.read_bytes())
    s.add("local:ssh key", lab.key_path.read_bytes())
    public_texts += [(state / "pki" / "etcd" / "ca.crt").read_text(), lab.known_hosts_path.read_text()]
    for p in lab.key_path.parent.glob("*.pub"):
        public_texts.append(p.read_text())
    s.public = public_pieces(public_texts)
    return s


def test_no_private_key_in_any_output(brought_up: tuple[hklab.Lab, Path, dict[str, str]]) -> None:
    lab, cfg, outputs = brought_up
    secrets = collect_secrets(lab, cfg)
    # 3 hosts × (5 kubeadm-tree keys + 2 etcd copies + SSH host keys), the CA key, the SSH key
    assert len(secrets.files) >= 3 * 7 + 2, sorted(secrets.files)
    pieces = secrets.pieces()
    assert len(pieces) > 3_000
    # the search finds a key in each form it could leak in (a check of the check)
    sample = next(c for w, c in secrets.files.items() if w.endswith("/etcd/server.key"))
    assert any("server.key (PEM body)" in x for x in leaks(sample.decode(), pieces))
    assert leaks(base64.encodebytes(sample).decode(), pieces)
    assert leaks(f"debug: key={private_number(sample).hex()}", pieces)
    total = sum(len(o) for o in outputs.values())
    assert total > 20_000, "the debug runs printed almost nothing"
    assert any("DEBUG" in o for o in outputs.values()), "debug logging was not on"
    for name, text in outputs.items():
        assert MARKER not in text, f"{name}: a private key marker in the output"
        found = leaks(text, pieces)
        assert not found, f"{name}: output contains pieces of {found}"
    print(f"\nsearched {total} characters of output from {len(outputs)} runs for "
          f"{len(secrets.files)} private keys ({len(pieces)} distinct 40-char pieces): none found")


def test_rendered_tree_has_no_private_key(brought_up: tuple[hklab.Lab, Path, dict[str, str]]) -> None:
    lab, cfg, _ = brought_up
    rendered = cfg.parent / "rendered"
    files = [p for p in rendered.rglob("*") if p.is_file()]
    assert len(files) >= 3 * 2 + 3 * 3, files  # sysctl + modules everywhere, etcd files ×3
    pieces = collect_secrets(lab, cfg).pieces()
    for p in files:
        text = p.read_bytes().decode("utf-8", errors="replace")
        assert MARKER not in text, p
        assert not leaks(text, pieces), p
        assert not p.name.endswith(".key"), p


def _stat(name: str, paths: list[str]) -> dict[str, tuple[str, str, str]]:
    out = run_on(name, "stat -c '%n %a %U %G' " + " ".join(paths)).stdout
    return {ln.split()[0]: tuple(ln.split()[1:]) for ln in out.splitlines()}  # type: ignore[misc]


def test_secret_files_on_hosts_are_0600_and_owned_as_documented(
    brought_up: tuple[hklab.Lab, Path, dict[str, str]]
) -> None:
    _lab, _cfg, _ = brought_up
    keys = [f for f in member_files(control_plane=True) if f.kind == "key"]
    assert keys and all(f.mode == 0o600 for f in keys)
    for n in HOSTS:
        found = [p for p in host_private_keys(n) if not p.startswith("/etc/ssh/")]
        # exactly the documented keys: no stray copy, no CA key on a host, nothing in /root
        assert sorted(found) == sorted(f.path for f in keys), (n, found)
        st = _stat(n, [f.path for f in keys])
        for f in keys:
            want_owner = "root" if f.path.startswith(KUBEADM_PKI) else "etcd"
            assert f.owner == want_owner and f.group == want_owner, f
            assert st[f.path] == ("600", f.owner, f.group), (n, f.path, st[f.path])
        dirs = _stat(n, [ETCD_PKI, KUBEADM_PKI, f"{KUBEADM_PKI}/etcd", "/var/lib/etcd"])
        assert dirs[ETCD_PKI] == ("700", "etcd", "etcd"), dirs
        assert dirs["/var/lib/etcd"] == ("700", "etcd", "etcd"), dirs
        assert dirs[KUBEADM_PKI][1:] == ("root", "root") and dirs[f"{KUBEADM_PKI}/etcd"][1:] == ("root", "root")
        # no upload left a temp copy of a key behind
        assert run_on(n, "find /etc -name '.homekube.*' | wc -l").stdout.strip() == "0"


def test_local_state_is_private(brought_up: tuple[hklab.Lab, Path, dict[str, str]]) -> None:
    _lab, cfg, _ = brought_up
    state = Path(load(cfg).state_dir)
    entries = [state, *state.rglob("*")]
    keys = sorted(p.relative_to(state).as_posix() for p in entries
                  if p.is_file() and (p.suffix == ".key" or MARKER.encode() in p.read_bytes()))
    # the etcd CA key, and the client key this machine uses for status and backups
    assert "pki/etcd/ca.key" in keys and all(k.startswith("pki/") for k in keys), keys
    snapshots = [p for p in entries if p.is_file() and "backup" in p.relative_to(state).as_posix()]
    assert snapshots, "the backup run left no snapshot in the state directory"
    for p in entries:
        st = p.lstat()
        assert st.st_uid == os.getuid(), p
        mode = stat.S_IMODE(st.st_mode)
        if p.is_dir():
            assert mode == 0o700, (p, oct(mode))
        elif p.name.endswith(".crt"):
            assert mode & 0o022 == 0, (p, oct(mode))  # public, but nobody else may change it
        else:
            # keys, snapshots (they hold every Secret of the cluster), lock files
            assert mode == 0o600, (p, oct(mode))
