"""The command line on real hosts: no silent hang, no step left running, live progress, a
readable plan, DNS-name addresses, and a lab config that is never overwritten unasked.

1. A package manager that hangs (new TCP connections from h2 dropped by an nft rule in its
   network namespace, so apt-get waits on its proxy forever) with `timeouts.package: 20`:
   apply ends with exit 1 naming h2, the phase, the step and the limit; h1 and h3 finish
   host preparation; nothing of homekube's or apt's is left running on h2; the next apply
   converges (no "Could not get lock").
2. An apply interrupted (Ctrl-C) or SIGKILLed while apt-get hangs on h2: the step is stopped
   on h2 too, and the next apply goes through.
3. Live progress in a pseudo-terminal: while h2's apt-get is held at a gate, the panel shows
   h2's step with a growing elapsed time; `lab up` prints its progress lines before it ends.
4. The 2-member etcd growth plan fits in under 60 lines; --detailed-exitcode; status marks
   roles.
5. Addresses written as DNS names (resolved through a private /etc/hosts in a mount namespace
   of the CLI, so nothing leaves the machine) plan exactly like the IPs.
6. `lab up` keeps an edited config unless --force, and then keeps a backup.

Figures (how long each run took, how long the host needed to clean up) are printed; run
with -s to see them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from homekube import lab as hklab
from homekube.lab import settings
from tests.rig.helpers import plan_json, run_cli, sh, wait_ok, write_config

pytestmark = pytest.mark.rig

BLOCK = """table inet hk_test_block {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname != "lo" ct state new meta l4proto tcp drop
  }
}
"""
#: what may be left running on a host after a stopped run: apt, dpkg, a homekube script, a step
# (a [x] in each pattern keeps pgrep from finding the shell that runs it)
LEFT = ("pgrep -a -f '[a]pt-get|/usr/lib/apt/method[s]/|/usr/bin/dpk[g]'; "
        "pgrep -a -x -f 'bash -s'; [ -e /run/homekube.step ] && cat /run/homekube.step; true")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def netns(name: str) -> str:
    return settings.netns_name(settings.host_index(name))


def block(name: str) -> None:
    """Drop every new TCP connection h makes to anything but itself: apt hangs connecting."""
    subprocess.run(["ip", "netns", "exec", netns(name), "nft", "-f", "-"], input=BLOCK, text=True, check=True)


def unblock(name: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns(name), "nft", "delete", "table", "inet", "hk_test_block"],
                   capture_output=True, check=False)


def needs_a_package(name: str) -> None:
    """Make sure host prep has a package step on `name` (dpkg alone, no network)."""
    sh(name, "dpkg --purge socat >/dev/null 2>&1; apt-get clean; true")


def wait_clean(name: str, limit: float = 90) -> tuple[float, str]:
    """Wait until nothing of apt's or homekube's runs on `name`; (seconds, what was left)."""
    t0 = time.monotonic()
    left = ""
    while time.monotonic() - t0 < limit:
        left = sh(name, LEFT).strip()
        if not left:
            return time.monotonic() - t0, ""
        time.sleep(0.5)
    return time.monotonic() - t0, left


@pytest.fixture(scope="module")
def cli_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    """Three brand-new hosts for this module."""
    hklab.down()
    cfg = tmp_path_factory.mktemp("cli") / "homekube-lab.yaml"
    lab = hklab.up(3, config_path=cfg)
    yield lab, cfg
    for h in ("h1", "h2", "h3"):
        unblock(h)


# ------------------------------------------------------------------ 1. a hanging package manager


def test_a_hanging_package_manager_ends_the_run_naming_host_and_step(
        cli_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    _lab, base = cli_lab
    cfg = write_config(base, tmp_path / "c.yaml")
    text = cfg.read_text()
    cfg.write_text(re.sub(r"^timeouts:\n(  .*\n)*", "", text, flags=re.M) + "timeouts: {package: 20}\n")
    needs_a_package("h2")
    block("h2")
    try:
        t0 = time.monotonic()
        res = run_cli("apply", "--config", str(cfg))
        took = time.monotonic() - t0
        err = res.stderr
        assert res.returncode == 1, res.stdout + err
        assert "Traceback" not in err
        assert re.search(r"^error: h2: host / install [a-z, ]*socat[a-z, ]*: timed out after 20 s", err, re.M), err
        assert "timeouts.package in cluster.yaml" in err and "stopped on the host" in err
        log = Path(re.search(r"^log: (.+)$", err, re.M).group(1))  # type: ignore[union-attr]
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert "h2: FAILED: install" in log.read_text()
        # the other hosts finished their wave: host preparation is done there
        per_host = plan_json(cfg)["hosts"]
        assert not [c for h in ("h1", "h3") for c in per_host[h]["changes"] if c["phase"] == "host"]
        assert [c for c in per_host["h2"]["changes"] if c["phase"] == "host"]
        cleanup, left = wait_clean("h2")
        assert not left, f"left running on h2: {left}"
        print(f"\nhanging apt-get on h2, timeouts.package 20 s: apply exit 1 after {took:.1f} s; "
              f"h2 clean {cleanup:.1f} s later")
    finally:
        unblock("h2")
    again = run_cli("apply", "--config", str(cfg))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Could not get lock" not in again.stdout + again.stderr


def test_timeout_bounds_a_whole_command(cli_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    _lab, base = cli_lab
    cfg = write_config(base, tmp_path / "c.yaml")
    needs_a_package("h2")
    block("h2")
    try:
        res = run_cli("apply", "--config", str(cfg), "--timeout", "8")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "error: gave up after --timeout 8 s; steps still running were stopped on the hosts" in res.stderr
        _cleanup, left = wait_clean("h2")
        assert not left, f"left running on h2: {left}"
    finally:
        unblock("h2")


# ------------------------------------------------------------------ 2. Ctrl-C and SIGKILL


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_stopped_apply_stops_its_step_on_the_host(
        cli_lab: tuple[hklab.Lab, Path], tmp_path: Path, how: signal.Signals) -> None:
    _lab, base = cli_lab
    cfg = write_config(base, tmp_path / "c.yaml")
    assert run_cli("apply", "--config", str(cfg)).returncode == 0  # only h2 will have work
    needs_a_package("h2")
    block("h2")
    try:
        p = subprocess.Popen([sys.executable, "-m", "homekube", "apply", "--config", str(cfg)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "COLUMNS": "200"})
        wait_ok("h2", "pgrep -f '/usr/lib/apt/method[s]/' >/dev/null")
        p.send_signal(how)
        out, err = p.communicate(timeout=120)
        if how == signal.SIGINT:
            assert p.returncode == 130, out + err
            assert "interrupted; steps still running were stopped on the hosts" in err
            assert re.search(r"^log: ", err, re.M), err
        else:
            assert p.returncode == -signal.SIGKILL
        cleanup, left = wait_clean("h2")
        assert not left, f"left running on h2 after {how.name}: {left}"
        print(f"\n{how.name} during a hanging apt-get: h2 clean {cleanup:.1f} s later")
    finally:
        unblock("h2")
    again = run_cli("apply", "--config", str(cfg))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Could not get lock" not in again.stdout + again.stderr


# ------------------------------------------------------------------ 3. live progress in a pty


class Pty:
    """A command in a pseudo-terminal of 80x24, read as it writes."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        self.p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                  env={**env, "TERM": "xterm-256color"})
        os.close(slave)
        self.fd = master
        self.raw = ""
        self.t0 = time.monotonic()

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def _read(self, wait: float) -> bool:
        r, _, _ = select.select([self.fd], [], [], wait)
        if not r:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        if not chunk:
            return False
        self.raw += chunk.decode(errors="replace")
        return True

    def until(self, pred: Callable[[str], bool], limit: float = 300) -> bool:
        """Read until `pred(text)`; True if it came while the command still ran."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if pred(self.text):
                return self.p.poll() is None
            if not self._read(0.2) and self.p.poll() is not None:
                break
        raise AssertionError(f"never seen; output so far:\n{self.text[-3000:]}")

    def finish(self, limit: float = 600) -> int:
        end = time.monotonic() + limit
        while time.monotonic() < end and self._read(0.2):
            if self.p.poll() is not None:
                while self._read(0.1) and select.select([self.fd], [], [], 0)[0]:
                    pass
                break
        os.close(self.fd)
        return self.p.wait(timeout=30)


GATE = ("mv /usr/bin/apt-get /usr/bin/apt-get.hk-real && printf '%s\\n' '#!/bin/sh' "
        "'while [ ! -e /run/hk-gate ]; do sleep 0.2; done' 'exec /usr/bin/apt-get.hk-real \"$@\"' "
        "> /usr/bin/apt-get && chmod 0755 /usr/bin/apt-get && rm -f /run/hk-gate")
UNGATE = "[ -e /usr/bin/apt-get.hk-real ] && mv -f /usr/bin/apt-get.hk-real /usr/bin/apt-get; rm -f /run/hk-gate; true"


def test_apply_shows_each_hosts_running_step_live(cli_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    _lab, base = cli_lab
    cfg = write_config(base, tmp_path / "c.yaml")
    assert run_cli("apply", "--config", str(cfg)).returncode == 0
    needs_a_package("h2")
    sh("h2", GATE)
    try:
        run = Pty([sys.executable, "-m", "homekube", "apply", "--config", str(cfg)])
        step = re.compile(r"h2\s+install [^\n]*?(\d+\.\d)s/\d+m\d\ds")  # the panel: host, step, elapsed/limit
        assert run.until(lambda t: len({m.group(1) for m in step.finditer(t)}) >= 3), \
            "the panel was not live while the step ran"
        seen = sorted({float(m.group(1)) for m in step.finditer(run.text)})
        shown_at = time.monotonic() - run.t0
        sh("h2", "touch /run/hk-gate")  # only now can the step end
        assert run.finish() == 0, run.text[-3000:]
        assert "✓ h2: install" in run.text and "applied" in run.text
        print(f"\napply in a pty: h2's step shown live at {', '.join(f'{s:.1f}s' for s in seen)} elapsed, "
              f"{shown_at:.1f} s after start, before the step could end")
    finally:
        sh("h2", UNGATE)


# ------------------------------------------------------------------ 4. the plan, status


def test_growth_plan_is_short_and_exit_codes_say_what_is_pending(
        cli_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    _lab, base = cli_lab
    one = write_config(base, tmp_path / "one.yaml")
    assert run_cli("apply", "--config", str(one)).returncode == 0
    assert run_cli("plan", "--config", str(one), "--detailed-exitcode").returncode == 0
    three = write_config(base, tmp_path / "three.yaml", etcd_hosts=("h1", "h2", "h3"))
    res = subprocess.run([sys.executable, "-m", "homekube", "plan", "--config", str(three), "--detailed-exitcode"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert res.returncode == 4, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) < 60, res.stdout
    assert max(len(ln) for ln in lines) <= 80
    assert "BEGIN CERTIFICATE" not in res.stdout and "etcdctl --endpoints" not in res.stdout
    assert re.search(r"^    \+ add h2 as a learner", res.stdout, re.M)
    assert re.search(r"^        CN h2, until \d{4}-\d\d-\d\d; SANs h2", res.stdout, re.M)
    verbose = run_cli("plan", "--config", str(three), "-v").stdout
    assert "etcdctl --endpoints" in verbose and len(verbose.splitlines()) > len(lines)
    print(f"\n2-member etcd growth plan: {len(lines)} lines at 80 columns (-v: {len(verbose.splitlines())})")
    st = run_cli("status", "--config", str(one))
    assert st.returncode == 0, st.stdout + st.stderr
    assert re.search(r"^ h1 .* cp,etcd,worker +ok .* active", st.stdout, re.M), st.stdout
    assert re.search(r"^ h2 .* worker +ok .* - *$", st.stdout, re.M), st.stdout


# ------------------------------------------------------------------ 5. DNS names


def in_private_dns(hosts: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own mount namespace where /etc/hosts is `hosts` and only files resolve."""
    (tmp_path / "hosts").write_text(hosts)
    (tmp_path / "nsswitch.conf").write_text("hosts: files\n")
    inner = (f"mount --bind {tmp_path / 'hosts'} /etc/hosts && "
             f"mount --bind {tmp_path / 'nsswitch.conf'} /etc/nsswitch.conf && "
             f"exec {sys.executable} -m homekube \"$@\"")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, "sh", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_addresses_may_be_dns_names(cli_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    lab, base = cli_lab
    by_ip = write_config(base, tmp_path / "ip.yaml")
    assert run_cli("apply", "--config", str(by_ip)).returncode == 0
    text = by_ip.read_text()
    for h in lab.hosts:
        text = text.replace(f"address: {h.ipv4},", f"address: {h.name}.lab.test,")
    by_name = tmp_path / "names.yaml"
    by_name.write_text(text)
    table = "".join(f"{h.ipv4} {h.name}.lab.test\n" for h in lab.hosts)
    res = in_private_dns(table, tmp_path, "plan", "--config", str(by_name), "--detailed-exitcode")
    assert res.returncode == 0, res.stdout + res.stderr  # same addresses, same certificates
    res = in_private_dns(table, tmp_path, "status", "--config", str(by_name), "-o", "json")
    assert res.returncode == 0, res.stderr
    assert [h["address"] for h in json.loads(res.stdout)["hosts"]] == [h.ipv4 for h in lab.hosts]
    res = in_private_dns(table.replace("h3.lab.test", "h3.other.test"), tmp_path, "plan", "--config", str(by_name))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert re.search(r"names\.yaml:\d+:\d+: hosts\[2\]\.address: the DNS name 'h3\.lab\.test' does not resolve",
                     res.stderr), res.stderr


def test_reset_asks_on_a_terminal_and_needs_yes_elsewhere(
        cli_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    _lab, base = cli_lab
    cfg = write_config(base, tmp_path / "c.yaml")
    assert run_cli("apply", "--config", str(cfg)).returncode == 0
    run = Pty([sys.executable, "-m", "homekube", "reset", "--config", str(cfg)])
    assert run.until(lambda t: "Remove all of this from 3 host(s)? [y/N]" in t)
    os.write(run.fd, b"n\n")
    assert run.finish() == 0 and "nothing was changed" in run.text
    res = subprocess.run([sys.executable, "-m", "homekube", "reset", "--config", str(cfg)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "run again with --yes to reset" in res.stdout
    assert run_cli("plan", "--config", str(cfg), "--detailed-exitcode").returncode == 0  # all still there


# ------------------------------------------------------------------ 6. lab up (last: it re-creates the lab)


def test_lab_up_shows_progress_live_and_keeps_an_edited_config(tmp_path: Path) -> None:
    cfg = tmp_path / "homekube-lab.yaml"
    hklab.down()
    run = Pty([sys.executable, "-m", "homekube", "lab", "up", "3", "--config", str(cfg)])
    assert run.until(lambda t: "lab: launched 3 hosts" in t), "a progress line came only at the end"
    assert run.until(lambda t: re.search(r"lab up 3 \d+(\.\d)?s", t) is not None)  # the live panel
    assert run.finish() == 0, run.text[-2000:]
    assert "lab: all 3 hosts ready" in run.text and f"config written to {cfg}" in run.text
    # an edited config is kept (exit 1, so `lab up && apply` stops), --force keeps a backup
    edited = cfg.read_text().replace("roles: [worker]", "roles: [etcd, worker]")
    cfg.write_text(edited)
    res = run_cli("lab", "up", "3", "--config", str(cfg))
    assert res.returncode == 1 and "differs from the config `lab up` writes" in res.stderr, res.stderr
    assert cfg.read_text() == edited
    res = run_cli("lab", "up", "3", "--config", str(cfg), "--force")
    assert res.returncode == 0, res.stderr
    backups = list(tmp_path.glob("homekube-lab.yaml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == edited
    assert cfg.read_text() != edited and "the old one is kept as" in res.stdout
    # a file lab up did not write is never touched, and nothing is done
    other = tmp_path / "cluster.yaml"
    other.write_text("name: mine\n")
    res = run_cli("lab", "up", "3", "--config", str(other))
    assert res.returncode == 2 and other.read_text() == "name: mine\n"
    assert "was not written by `homekube lab up`" in res.stderr


def test_readme_quick_start_leaves_a_working_homekube_and_look_around_works(tmp_path: Path) -> None:
    """README's quick start from its venv on (the venv it makes is this checkout's), then its
    "look around" lines verbatim, in one shell, from a directory of their own."""
    root = Path(__file__).resolve().parents[2]
    blocks = re.findall(r"```bash\n(.*?)```", (root / "README.md").read_text(), re.S)
    quick, look = blocks[0], blocks[1]
    assert quick.startswith("apt-get update") and ". .venv/bin/activate && homekube lab up" in quick
    (tmp_path / ".venv").symlink_to(root / ".venv")
    script = f"set -e\ncd {tmp_path}\n{quick[quick.index('. .venv/bin/activate'):]}\n{look}"
    env = {k: v for k, v in os.environ.items() if k not in ("HOMEKUBE_CONFIG", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # no homekube on it
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=900,
                         env={**env, "COLUMNS": "80"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"^applied \d+ change\(s\) on 3 host\(s\)", res.stdout, re.M), res.stdout
    assert re.search(r"^0 changes on 3 host\(s\)$", res.stdout, re.M), res.stdout
    assert "etcd: 1 of 1 endpoints healthy" in res.stdout
    assert "lab down: hosts stopped and removed" in res.stdout
