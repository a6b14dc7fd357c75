"""Faults on real hosts: bad hosts refused untouched, killed applies, a host lost mid-apply, and
an SSH connection cut during an upload.

1. Host-level bad input (the config-level half is tests/unit/test_bad_input_corpus.py): each
   case gives one clear message, exit 3 (or 0 for a warning), no traceback, and leaves every
   host exactly as it was (a fingerprint plus `find -newer` on each host).
2. SIGKILL `homekube apply` at 20 moments of a fresh 3-member bring-up (etcd, its PKI and the
   local CA wiped between kills) and 6 of config changes of a running cluster with data in
   it, drawn with a fixed seed; a growth killed between `member add` and the start. Every rerun converges (apply 0, plan 0 changes), etcd has exactly h1, h2, h3
   as voting members, and the data written before is intact.
3. A host powered off mid-apply: a clear error naming it, the others consistent, and after it
   is back the rerun converges.
4. An SSH connection cut while a 5 MB file is uploaded: the target is absent or complete.

The figures (kill moments, outcomes) are printed; run with -s to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homekube import lab as hklab
from homekube.config.loader import load
from homekube.executor import execute
from homekube.ops.session import ssh_target
from homekube.plan.model import Change, PhasePlan, Plan, WriteFile
from homekube.transport.base import ExecResult, LineSink
from homekube.transport.ssh import SshTransport
from tests.rig.helpers import plan_json, run_cli, run_on, write_config

pytestmark = pytest.mark.rig

SEED = 20260125
HOSTS = ("h1", "h2", "h3")
ETCDCTL = "set -a; . /etc/etcd/etcdctl.env; set +a; etcdctl"


def cli_env() -> dict[str, str]:
    # unbuffered, so that the last line printed before a SIGKILL says where the run was
    return {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def faults_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    """Three brand-new hosts for this module (nothing applied yet)."""
    hklab.down()
    cfg = tmp_path_factory.mktemp("faults") / "homekube-lab.yaml"
    lab = hklab.up(3, config_path=cfg)
    yield lab, cfg


# ------------------------------------------------------------------ "nothing was changed"

PRUNE = " ".join(f"-path {p} -prune -o" for p in ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/log", "/var/tmp"))
MARK = "/root/.homekube-fault-mark"


def fingerprint(names: tuple[str, ...] = HOSTS) -> dict[str, str]:
    """What a change on a host would alter: managed files, sysctls, units, users, packages."""
    cmd = (
        "sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables 2>&1; "
        "ls -la --time-style=+%s /etc/sysctl.d /etc/modules-load.d /etc/etcd /etc/kubernetes /var/lib/etcd 2>&1; "
        "systemctl is-active etcd 2>&1; dpkg -l socat conntrack 2>&1 | tail -2; getent passwd | cut -d: -f1 | sort | tr '\\n' ' '"
    )
    return {n: run_on(n, cmd, ok=False).stdout for n in names}


def mark_hosts(names: tuple[str, ...] = HOSTS) -> None:
    for n in names:
        run_on(n, f"touch {MARK} && sleep 0.01")


def changed_since_mark(name: str) -> list[str]:
    """Files created or modified on `name` since mark_hosts() (volatile trees excluded)."""
    out = run_on(name, f"find / -xdev {PRUNE} -newer {MARK} -print 2>/dev/null", ok=False).stdout
    return [p for p in out.split() if p not in (MARK, "/root")]


# ------------------------------------------------------------------ 1. host-level bad input


@dataclass(frozen=True)
class HostCase:
    id: str
    make: Callable[[hklab.Lab, Path, Path], Path]  # (lab, base config, tmp dir) -> config
    exit: int
    fragments: tuple[str, ...]
    setup: str = ""  # shell run on every host before, undone by `undo`
    undo: str = ""
    verb: str = "apply"
    pattern: str = ""  # a regex stderr must match as well


def _ed(base: Path, dest: Path, *pairs: tuple[str, str]) -> Path:
    text = base.read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    dest.write_text(text)
    return dest


def _host_line(lab: hklab.Lab, name: str) -> str:
    return f"- {{name: {name}, address: {lab.host(name).ipv4},"


def _port_closed(lab: hklab.Lab, base: Path, tmp: Path) -> Path:
    return _ed(base, tmp / "c.yaml", ("  user: root", "  user: root\n  port: 2222"))


def _one_port_closed(lab: hklab.Lab, base: Path, tmp: Path) -> Path:
    line = _host_line(lab, "h2")
    return _ed(base, tmp / "c.yaml", (line, line.replace("{name: h2,", "{name: h2, ssh: {port: 2222},")))


def _not_in_known_hosts(lab: hklab.Lab, base: Path, tmp: Path) -> Path:
    kh = tmp / "known_hosts"
    kh.write_text("".join(ln + "\n" for ln in lab.known_hosts_path.read_text().splitlines()
                          if not ln.startswith(("h3,", lab.host("h3").ipv4))))
    return _ed(base, tmp / "c.yaml", (f"knownHosts: {lab.known_hosts_path}", f"knownHosts: {kh}"))


def _no_sudo_user(lab: hklab.Lab, base: Path, tmp: Path) -> Path:
    return _ed(base, tmp / "c.yaml", ("  user: root", "  user: hkfault"))


def _address_not_on_host(lab: hklab.Lab, base: Path, tmp: Path) -> Path:
    h2 = lab.host("h2")
    wrong = h2.ipv4.rsplit(".", 1)[0] + ".97"
    return _ed(base, tmp / "c.yaml", (f"address: {h2.ipv4},", f"address: {wrong}, sshHost: {h2.ipv4},"))


def _two_unreachable(lab: hklab.Lab, base: Path, tmp: Path) -> Path:
    pre = lab.host("h2").ipv4.rsplit(".", 1)[0]
    return _ed(base, tmp / "c.yaml", (f"address: {lab.host('h2').ipv4},", f"address: {pre}.98,"),
               (f"address: {lab.host('h3').ipv4},", f"address: {pre}.99,"),
               ("  user: root", "  user: root\n  connectTimeout: 3"))


def _even_etcd(lab: hklab.Lab, base: Path, tmp: Path) -> Path:
    return write_config(base, tmp / "c.yaml", etcd_hosts=("h1", "h2"))


OLD_DEBIAN = ("cp -n /usr/lib/os-release /root/os-release.orig; "
              "sed -i 's/^VERSION_ID=.*/VERSION_ID=\"10\"/; s/^PRETTY_NAME=.*/PRETTY_NAME=\"Debian GNU\\/Linux 10 (buster)\"/' /usr/lib/os-release")

HOST_CASES: list[HostCase] = [
    HostCase("sshd port closed everywhere", _port_closed, 3, ("3 hosts cannot be reached", "h1: cannot connect to", ":2222")),
    HostCase("one host's port override closed", _one_port_closed, 3, ("error: h2: cannot connect to", ":2222")),
    HostCase("host key not in known_hosts", _not_in_known_hosts, 3, ("error: h3: host key of", "is not trusted"),
             verb="check"),
    # sudo is checked right after login, before any script is sent (the lab image has no sudo)
    HostCase("login user without sudo", _no_sudo_user, 3, ("hkfault cannot become root with `sudo -n`",
                                                            "passwordless sudo"),
             pattern=r"(?m)^(error: )?h[123]: hkfault cannot become root",
             setup="useradd -m -s /bin/bash hkfault && install -d -m 700 -o hkfault /home/hkfault/.ssh && "
                   "install -m 600 -o hkfault /root/.ssh/authorized_keys /home/hkfault/.ssh/",
             undo="userdel -r hkfault 2>/dev/null; true"),
    HostCase("address is not the host's", _address_not_on_host, 3,
             ("preflight refused", "h2: address", ".97 is not configured on the host")),
    HostCase("two hosts unreachable", _two_unreachable, 3, ("2 hosts cannot be reached", "h2: cannot reach", "h3: cannot reach"),
             verb="plan"),
    # nspawn hosts show the machine's RAM: h3 gets a /proc/meminfo that says 1 GiB
    HostCase("a 1 GiB host", lambda lab, base, tmp: _ed(base, tmp / "c.yaml"), 3,
             ("preflight refused", "h3: 1.0 GiB RAM: at least 1.7 GiB is needed"),
             setup='[ "$(hostname)" != h3 ] || { sed "s/^MemTotal:.*/MemTotal:        1048576 kB/; '
                   's/^MemAvailable:.*/MemAvailable:     524288 kB/" /proc/meminfo > /run/hk-meminfo && '
                   "mount --bind /run/hk-meminfo /proc/meminfo; }",
             undo="umount /proc/meminfo 2>/dev/null; rm -f /run/hk-meminfo; true"),
    HostCase("even etcd count is a warning", _even_etcd, 0, ("warning: ", "2 etcd members tolerate no more failures than 1"),
             verb="plan"),
]


@pytest.mark.parametrize("case", HOST_CASES, ids=[c.id for c in HOST_CASES])
def test_bad_host_is_refused_untouched(faults_lab: tuple[hklab.Lab, Path], tmp_path: Path, case: HostCase) -> None:
    lab, base = faults_lab
    if case.setup:
        for n in HOSTS:
            run_on(n, case.setup)
    try:
        cfg = case.make(lab, base, tmp_path)
        before = fingerprint()
        mark_hosts()
        t0 = time.monotonic()
        res = run_cli(case.verb, "--config", str(cfg), timeout=120)
        took = time.monotonic() - t0
        out = res.stdout + res.stderr
        assert res.returncode == case.exit, (case.id, res.returncode, out)
        assert "Traceback" not in out, out
        for f in case.fragments:
            assert f in res.stderr, (case.id, f, res.stderr)
        assert re.search(case.pattern, res.stderr), (case.id, case.pattern, res.stderr)
        if case.exit:
            assert len([ln for ln in res.stderr.splitlines() if ln.startswith("error:")]) == 1, res.stderr
            assert "applied" not in res.stdout
        else:
            assert json.loads(run_cli("plan", "--config", str(cfg), "-o", "json").stdout)["changes"] > 0
        assert took < 60, took
        assert fingerprint() == before, f"{case.id}: a host was changed"
        for n in HOSTS:
            assert changed_since_mark(n) == [], (case.id, n, changed_since_mark(n))
        print(f"{case.id}: exit {res.returncode} in {took:.1f}s: {res.stderr.strip().splitlines()[0]}")
    finally:
        if case.undo:
            for n in HOSTS:
                run_on(n, case.undo, ok=False)


def test_two_unfit_hosts_are_reported_together(faults_lab: tuple[hklab.Lab, Path]) -> None:
    """An old Debian on h2 and a single CPU on h3: one refusal that names both, nothing touched."""
    lab, base = faults_lab
    cpuset = next((Path(line) for line in (lab.dir / "hosts" / "h3" / "cgroups").read_text().splitlines()
                   if "/cpuset/" in line), None)
    assert cpuset is not None and (cpuset / "cpuset.cpus").exists()
    old_cpus = (cpuset / "cpuset.cpus").read_text().strip()
    run_on("h2", OLD_DEBIAN)
    (cpuset / "cpuset.cpus").write_text("0")
    try:
        assert run_on("h3", "nproc").stdout.strip() == "1"
        before = fingerprint()
        mark_hosts()
        res = run_cli("apply", "--config", str(base), timeout=120)
        assert res.returncode == 3, res.stdout + res.stderr
        assert "Traceback" not in res.stdout + res.stderr
        assert "h2: unsupported OS Debian GNU/Linux 10 (buster)" in res.stderr, res.stderr
        assert "h3: 1 CPU: kubeadm needs at least 2" in res.stderr, res.stderr
        assert "hint: fix the hosts or cluster.yaml; nothing was changed" in res.stderr
        assert fingerprint() == before
        for n in HOSTS:
            assert changed_since_mark(n) == [], n
    finally:
        (cpuset / "cpuset.cpus").write_text(old_cpus)
        run_on("h2", "mv /root/os-release.orig /usr/lib/os-release")


# ------------------------------------------------------------------ 2. SIGKILL at random moments

WIPE = (
    "systemctl disable --now etcd >/dev/null 2>&1; systemctl reset-failed etcd >/dev/null 2>&1; "
    "rm -rf /var/lib/etcd /etc/etcd /etc/kubernetes/pki /etc/systemd/system/etcd.service "
    "/usr/local/bin/etcd /usr/local/bin/etcdctl /usr/local/bin/etcdutl "
    "/etc/sysctl.d/90-homekube.conf /etc/modules-load.d/homekube.conf; "
    "userdel etcd >/dev/null 2>&1; systemctl daemon-reload; "
    "find /etc /usr/local /var/lib /root -name '.homekube.*' -exec rm -f {} + 2>/dev/null; true"
)
#: a homekube script (`bash -s` fed by sshd) still running on a host
SCRIPTS_RUNNING = "pgrep -f '^bash -s$' >/dev/null"


def wait_scripts_done(timeout: float = 150) -> float:
    """Wait until no homekube script runs on any host (one orphaned by a killed apply runs on
    until it next writes to its closed stdout); return how long that took."""
    t0 = time.monotonic()
    for n in HOSTS:
        run_on(n, f"end=$((SECONDS + {int(timeout)})); while {SCRIPTS_RUNNING}; do "
              "[ $SECONDS -lt $end ] || { ps -ef >&2; exit 1; }; sleep 0.2; done")
    return time.monotonic() - t0


def leftovers() -> list[str]:
    """Temp files of interrupted writes (`.homekube.XXXXXX` beside their target); they never
    replace the target, and must not outlive the run that made them."""
    return [f"{n}:{p}" for n in HOSTS for p in run_on(
        n, "find /etc /usr/local /var/lib /root -name '.homekube.*' 2>/dev/null; true").stdout.split()]


def wipe(state_dir: Path) -> list[str]:
    """Remove etcd, its PKI, the host-prep files and the local CA; return the temp files left."""
    wait_scripts_done()
    left = leftovers()
    for n in HOSTS:
        run_on(n, WIPE)
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    return left


def killed_apply(cfg: Path, at: float) -> tuple[str, float]:
    """Start `homekube apply`, SIGKILL it `at` seconds later; return (outcome, runtime)."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "homekube", "apply", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env())
    try:
        p.wait(timeout=at)
        out = p.stdout.read() if p.stdout else ""
        return (f"finished first (exit {p.returncode})" if p.returncode == 0 else f"failed first: {out[-300:]}",
                time.monotonic() - t0)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        out = p.stdout.read() if p.stdout else ""
        last = [ln.strip() for ln in out.splitlines() if ln.strip()]
        return (f"killed after: {last[-1] if last else '(nothing printed)'}", time.monotonic() - t0)
    finally:
        if p.stdout:
            p.stdout.close()


def converge(cfg: Path) -> tuple[float, int]:
    """Rerun apply until it succeeds; return (seconds, attempts). A second attempt is allowed
    only for a lock still held by the killed run's remote lock holder."""
    t0 = time.monotonic()
    for attempt in range(1, 4):
        res = run_cli("apply", "--config", str(cfg), timeout=400)
        if res.returncode == 0:
            return time.monotonic() - t0, attempt
        assert "holds the host lock" in res.stderr, res.stdout + res.stderr
        time.sleep(1)
    raise AssertionError("the host lock was never released")


def members() -> list[dict[str, object]]:
    got = json.loads(run_on("h1", f"{ETCDCTL} member list -w json").stdout)
    return list(got["members"])


def assert_converged(cfg: Path) -> None:
    plan = plan_json(cfg)
    assert plan["changes"] == 0, json.dumps(plan["hosts"], indent=1)[:3000]
    ms = members()
    assert sorted(str(m.get("name")) for m in ms) == list(HOSTS), ms
    assert not any(m.get("isLearner") for m in ms), ms
    for n in HOSTS:
        assert run_on(n, "systemctl is-active etcd").stdout.strip() == "active"
    health = run_on("h1", f"{ETCDCTL} endpoint health --cluster -w json").stdout
    endpoints = json.loads(health)  # every advertised client URL: IPv4 and IPv6 of each member
    assert len(endpoints) == 6 and all(e["health"] for e in endpoints), health


def test_sigkill_apply_at_random_moments_then_rerun_converges(
    faults_lab: tuple[hklab.Lab, Path], tmp_path: Path
) -> None:
    _lab, base = faults_lab
    cfg = write_config(base, tmp_path / "three.yaml", etcd_hosts=HOSTS)
    state_dir = Path(load(cfg).state_dir)
    rng = random.Random(SEED)
    started = time.monotonic()

    # the first, uninterrupted fresh bring-up (packages too), then the bring-up the loop redoes
    t0 = time.monotonic()
    first = run_cli("apply", "--config", str(cfg), timeout=400)
    full = time.monotonic() - t0
    assert first.returncode == 0, first.stdout + first.stderr
    assert_converged(cfg)
    wipe(state_dir)
    t0 = time.monotonic()
    again = run_cli("apply", "--config", str(cfg), timeout=400)
    bringup = time.monotonic() - t0
    assert again.returncode == 0, again.stdout + again.stderr
    print(f"\nfresh bring-up with packages {full:.2f}s; after a wipe {bringup:.2f}s")

    # phase A: kills during a fresh bring-up (etcd and the local CA wiped before each)
    moments_a = [round(rng.uniform(0, bringup), 2) for _ in range(20)]
    results: list[str] = []
    temp_files: set[str] = set()  # the same leftover may be seen twice
    for i, at in enumerate(moments_a):
        temp_files |= set(wipe(state_dir))
        outcome, _ran = killed_apply(cfg, at)
        took, attempts = converge(cfg)
        assert_converged(cfg)
        results.append(f"A{i:02d} kill at {at:5.2f}s: {outcome} → rerun {took:.1f}s"
                       + (f" ({attempts} attempts)" if attempts > 1 else ""))
        print(results[-1])
    wait_scripts_done()
    temp_files |= set(leftovers())

    # phase B: a running cluster with data; kill applies of config changes (a sysctl and the
    # etcd snapshot count, which rolls a restart through the members)
    for i in range(50):
        run_on("h1", f"{ETCDCTL} put /faults/key{i} value-{i} >/dev/null")
    digest = run_on("h1", f"{ETCDCTL} get --prefix /faults/ -w json | python3 -c "
                      "'import json,sys; print(sorted((k[\"key\"],k[\"value\"]) for k in json.load(sys.stdin)[\"kvs\"]))' "
                      "| sha256sum").stdout.split()[0]
    variants = []
    for v, (somaxconn, snap) in enumerate([(4097, 6000), (4096, 5000)]):
        variants.append(write_config(base, tmp_path / f"change{v}.yaml", etcd_hosts=HOSTS, replace={
            "etcd:\n": f"etcd:\n  snapshotCount: {snap}\n",
            "artifacts:": f"hostPrep:\n  sysctls: {{net.core.somaxconn: '{somaxconn}'}}\nartifacts:"}))
    t0 = time.monotonic()
    change = run_cli("apply", "--config", str(variants[0]), timeout=400)
    change_took = time.monotonic() - t0
    assert change.returncode == 0, change.stdout + change.stderr
    moments_b = [round(rng.uniform(0, change_took), 2) for _ in range(6)]
    for i, at in enumerate(moments_b):
        target = variants[(i + 1) % 2]
        wait_scripts_done()
        outcome, _ran = killed_apply(target, at)
        took, attempts = converge(target)
        assert_converged(target)
        assert run_on("h2", "sysctl -n net.core.somaxconn").stdout.strip() == ("4096" if target == variants[1] else "4097")
        for n in HOSTS:
            got = run_on(n, f"{ETCDCTL} get --prefix /faults/ -w json | python3 -c "
                        "'import json,sys; print(sorted((k[\"key\"],k[\"value\"]) for k in json.load(sys.stdin)[\"kvs\"]))' "
                        "| sha256sum").stdout.split()[0]
            assert got == digest, f"data changed on {n} after kill B{i}"
        results.append(f"B{i:02d} kill at {at:5.2f}s of a {change_took:.1f}s change: {outcome} → rerun {took:.1f}s"
                       + (f" ({attempts} attempts)" if attempts > 1 else ""))
        print(results[-1])
    wait_scripts_done()
    temp_files |= set(leftovers())
    killed = sum("killed" in r for r in results)
    print(f"{len(results)} kills ({killed} while running), all converged; {time.monotonic() - started:.0f}s total; "
          f"temp files of interrupted writes left behind: {len(temp_files)} {sorted(temp_files)[:5]}")
    assert len(moments_a) >= 20 and len(results) >= 26 and killed >= 20, results
    # a killed run's script removes its temp file on the way out (trap), and the next write
    # into that directory sweeps any stale one: none may survive a converged rerun
    assert not temp_files, sorted(temp_files)
    run_cli("apply", "--config", str(cfg), timeout=400)  # back to the plain 3-member config


HOLD = "/run/homekube-fault-hold"
#: on the host it is put on, `systemctl start ... etcd` waits while HOLD exists, then fails
SYSTEMCTL_HOLD = (
    "printf '%s\\n' '#!/bin/sh' 'case \"$*\" in *start*etcd*) while [ -e " + HOLD + " ]; do sleep 0.1; done; "
    "echo simulated failure >&2; exit 1;; esac' 'exec /usr/bin/systemctl \"$@\"' > /usr/local/sbin/systemctl && "
    f"chmod 755 /usr/local/sbin/systemctl && touch {HOLD}"
)


def test_kill_between_member_add_and_start_then_rerun_converges(
    faults_lab: tuple[hklab.Lab, Path], tmp_path: Path
) -> None:
    """Growth 1 → 3 killed after `member add h2 --learner` but before h2's etcd started: the
    added member has no name until it starts. The rerun must finish that join, not add h2 a
    second time ("Peer URLs already exists" forever, before the fix) nor leave a stray member."""
    _lab, base = faults_lab
    one = write_config(base, tmp_path / "one.yaml", etcd_hosts=("h1",))
    three = write_config(base, tmp_path / "three.yaml", etcd_hosts=HOSTS)
    wipe(Path(load(three).state_dir))
    assert run_cli("apply", "--config", str(one), timeout=400).returncode == 0
    run_on("h1", f"{ETCDCTL} put /faults/grow before-growth >/dev/null")
    run_on("h2", SYSTEMCTL_HOLD)
    try:
        p = subprocess.Popen([sys.executable, "-m", "homekube", "apply", "--config", str(three)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env())
        assert p.stdout is not None
        seen = []
        for line in p.stdout:
            seen.append(line)
            if "h1: add h2 as a learner" in line:
                p.send_signal(signal.SIGKILL)
                break
        p.wait(timeout=60)
        p.stdout.close()
        assert p.returncode == -signal.SIGKILL, "".join(seen)
        listed = run_on("h1", f"{ETCDCTL} member list").stdout
        assert re.search(r", unstarted, , https://[^,]+:2380, , true", listed), listed  # added, never started
    finally:
        run_on("h2", f"rm -f {HOLD} /usr/local/sbin/systemctl")
    took, _attempts = converge(three)
    assert_converged(three)
    ids = [m["ID"] for m in members()]
    assert len(set(ids)) == 3
    for n in HOSTS:
        assert run_on(n, f"{ETCDCTL} get --print-value-only /faults/grow").stdout.strip() == "before-growth"
    print(f"\nkilled between member add and start: the rerun joined h2 and h3 in {took:.1f}s")


def test_member_that_missed_the_bootstrap_joins_on_rerun(
    faults_lab: tuple[hklab.Lab, Path], tmp_path: Path
) -> None:
    """A fresh 3-member bootstrap where h3's etcd does not start (the run fails there): h1 and h2
    form the cluster with h3 listed but never started; the rerun starts h3 into it."""
    _lab, base = faults_lab
    three = write_config(base, tmp_path / "three.yaml", etcd_hosts=HOSTS)
    wipe(Path(load(three).state_dir))
    run_on("h3", SYSTEMCTL_HOLD + f" && rm -f {HOLD}")
    try:
        res = run_cli("apply", "--config", str(three), timeout=400)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "error: h3: etcd / start etcd" in res.stderr and "simulated failure" in res.stdout + res.stderr
        assert "Traceback" not in res.stdout + res.stderr
    finally:
        run_on("h3", "rm -f /usr/local/sbin/systemctl")
    assert run_on("h3", "systemctl is-active etcd", ok=False).stdout.strip() != "active"
    took, _attempts = converge(three)
    assert_converged(three)
    print(f"\nh3 missed the bootstrap: the rerun started it in {took:.1f}s")


# ------------------------------------------------------------------ 3. a host lost mid-apply


def test_host_powered_off_mid_apply_then_rerun_converges(
    faults_lab: tuple[hklab.Lab, Path], tmp_path: Path
) -> None:
    _lab, base = faults_lab
    cfg = write_config(base, tmp_path / "three.yaml", etcd_hosts=HOSTS)
    wipe(Path(load(cfg).state_dir))
    p = subprocess.Popen([sys.executable, "-m", "homekube", "apply", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    lines: list[str] = []
    stopped = threading.Event()
    stop_error: list[BaseException] = []

    def stopper() -> None:
        try:
            hklab.stop_host("h3")
        except BaseException as e:  # reported by the main thread
            stop_error.append(e)
        finally:
            stopped.set()

    assert p.stdout is not None and p.stderr is not None
    thread: threading.Thread | None = None
    for line in p.stderr:  # progress: timestamped lines (no terminal)
        lines.append(line)
        if thread is None and re.fullmatch(r"\d\d:\d\d:\d\d etcd service", line.strip()):  # the etcd phase began
            thread = threading.Thread(target=stopper)
            thread.start()
    out = p.stdout.read()
    p.wait(timeout=300)
    err = "".join(lines)
    assert thread is not None, out + err
    thread.join(timeout=120)
    assert stopped.is_set() and not stop_error, stop_error
    try:
        assert p.returncode == 1, (p.returncode, out, err)
        assert "Traceback" not in out + err
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: h3: "), err
        assert "run apply again" in err
        print(f"\nh3 stopped during the etcd phase: {errors[0]}")
        # the other hosts are consistent: no half-written file, etcd either not started or serving
        for n in ("h1", "h2"):
            leftovers = run_on(n, "find /etc /usr/local/bin /var/lib/etcd -name '.homekube.*' 2>/dev/null", ok=False).stdout
            assert leftovers.strip() == "", (n, leftovers)
            conf = run_on(n, "cat /etc/etcd/etcd.conf.yml 2>/dev/null", ok=False).stdout
            assert conf == "" or conf.rstrip().endswith("trusted-ca-file: /etc/etcd/pki/ca.crt"), conf
    finally:
        hklab.start_host("h3")
    took, _attempts = converge(cfg)
    assert_converged(cfg)
    print(f"after h3 came back: rerun converged in {took:.1f}s")


# ------------------------------------------------------------------ 4. a cut during an upload

SIZE = 5 * 1024 * 1024
TARGET = "/root/homekube-upload.bin"


class SlowSsh(SshTransport):
    """Sends the script in 64 KiB chunks and cuts the connection after `cut_at` bytes."""

    cut_at: int | None = None
    sent = 0

    async def run(self, script: str, *, timeout: float | None = None,
                  on_line: LineSink | None = None) -> ExecResult:
        self.execs += 1
        proc = await self._conn.create_process("bash -s")
        data = script.encode()
        for i in range(0, len(data), 65536):
            chunk = data[i:i + 65536]
            if self.cut_at is not None and self.sent + len(chunk) > self.cut_at:
                self._conn.abort()  # the TCP connection is gone, mid-transfer
                raise ConnectionError(f"cut after {self.sent} of {len(data)} bytes")
            proc.stdin.write(chunk.decode())
            await proc.stdin.drain()
            self.sent += len(chunk)
            await asyncio.sleep(0.002)
        if self.cut_at is not None and self.cut_at >= len(data):
            proc.stdin.write_eof()
            await asyncio.sleep(0.05)
            self._conn.abort()  # everything was sent: the script runs on without us
            raise ConnectionError("cut after the whole script was sent")
        proc.stdin.write_eof()
        res = await proc.wait()
        return ExecResult(res.exit_status or 0, str(res.stdout), str(res.stderr))


def _upload_plan(content: bytes, path: str) -> Plan:
    change = Change("h2", "upload", f"file {path}", f"write {path}", "fault test",
                    (WriteFile(path, content, 0o600),))
    return Plan(cluster="lab", hosts=["h2"], phases=[PhasePlan("upload", "upload", (change,))])


def target_state(content: bytes) -> tuple[str, list[str]]:
    """('absent' | 'complete' | 'PARTIAL ...', leftover temp files) for TARGET on h2."""
    for _ in range(150):  # an orphaned script may still be writing: wait until it is done
        if run_on("h2", SCRIPTS_RUNNING, ok=False).returncode != 0:
            break
        time.sleep(0.2)
    res = run_on("h2", f"if [ -e {TARGET} ]; then stat -c %s {TARGET}; sha256sum < {TARGET}; else echo absent; fi; "
                   "ls -a /root | grep '^\\.homekube\\.' || true", ok=False)
    words = res.stdout.split()
    leftovers = [w for w in words if w.startswith(".homekube.")]
    if words[0] == "absent":
        return "absent", leftovers
    size, digest = int(words[0]), words[1]
    if digest == hashlib.sha256(content).hexdigest():
        return "complete", leftovers
    return f"PARTIAL ({size} of {len(content)} bytes)", leftovers


def test_cut_during_upload_never_leaves_a_partial_file(faults_lab: tuple[hklab.Lab, Path]) -> None:
    _lab, base = faults_lab
    cfg = load(base)
    content = random.Random(SEED).randbytes(SIZE)
    script_len = len(_script_for(content))
    outcomes: list[str] = []

    async def client_cut(cut_at: int) -> str:
        t = await SlowSsh.connect(ssh_target(cfg, cfg.host("h2")))
        assert isinstance(t, SlowSsh)
        t.cut_at = cut_at
        try:
            result = await execute(_upload_plan(content, TARGET), {"h2": t})
        finally:
            with contextlib.suppress(Exception):
                await t.close()
        assert not result.ok and result.failed[0].host == "h2"
        return str(result.failed[0])

    # client side: the connection dies at 0 %, 10 %, 50 %, 90 %, 99.9 % and after 100 % of the script
    for frac in (0.0, 0.1, 0.5, 0.9, 0.999, 1.0):
        run_on("h2", f"rm -f {TARGET} /root/.homekube.*")
        cut = int(script_len * frac) if frac < 1 else script_len
        err = asyncio.run(client_cut(cut))
        state, leftovers = target_state(content)
        outcomes.append(f"client cut at {frac:6.1%}: {state}, temp files left {len(leftovers)}")
        assert not state.startswith("PARTIAL"), outcomes[-1]
        if frac < 1:
            # the script is one function called on its last line: a cut upload runs nothing
            assert state == "absent" and leftovers == [], outcomes[-1]
        else:
            # all sent, then cut: the orphaned script dies on its first write to the closed
            # channel (SIGPIPE) or finishes the upload; either way never half a file
            assert state in ("absent", "complete"), outcomes[-1]
        assert "h2" in err

    # host side: kill the sshd session serving the real transport while it streams the script,
    # and while base64 writes the temp file (the script's whole process tree, by PID)
    async def server_cut(when: str) -> str:
        t = await SshTransport.connect(ssh_target(cfg, cfg.host("h2")))
        task = asyncio.create_task(execute(_upload_plan(content, TARGET), {"h2": t}))
        probe = ("pgrep -x base64 >/dev/null" if when == "writing" else "pgrep -f '^bash -s$' >/dev/null")
        kill = ("for p in $(pgrep -f '^bash -s$'); do pp=$(ps -o ppid= -p $p | tr -d ' '); "
                "kill -9 $pp $p $(pgrep -P $p) 2>/dev/null; done; true")
        await asyncio.to_thread(run_on, "h2", f"for _ in $(seq 400); do {probe} && break; sleep 0.01; done; {kill}")
        result = await asyncio.wait_for(task, 120)
        with contextlib.suppress(Exception):
            await t.close()
        return "failed" if not result.ok else "finished"

    for when in ("streaming", "writing", "streaming", "writing"):
        run_on("h2", f"rm -f {TARGET} /root/.homekube.*")
        how = asyncio.run(server_cut(when))
        state, leftovers = target_state(content)
        outcomes.append(f"sshd session killed while {when}: apply {how}, target {state}, temp files left {len(leftovers)}")
        assert not state.startswith("PARTIAL"), outcomes[-1]
        if state == "absent" or how == "failed":
            assert how == "failed", outcomes[-1]
    print("\n" + "\n".join(outcomes))
    run_on("h2", f"rm -f {TARGET} /root/.homekube.*")


def _script_for(content: bytes) -> str:
    from homekube.plan.script import render

    return render(_upload_plan(content, TARGET).phases[0].changes)


def test_script_renders_the_upload_as_one_function() -> None:
    """What the cut test relies on: nothing runs until the last line arrives."""
    script = _script_for(b"x" * 10)
    assert script.rstrip().splitlines()[-1] == "homekube_main"
    assert re.search(r"mktemp .*\.homekube\.XXXXXX", script)
