"""The host-side scripts around every exec, run by a real bash on this machine: the lock +
facts script, the watcher that stops a script whose operator went away, per-step timeouts,
and what a new run's lock does about a step an ended run left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import homekube.plan.script as ps
import homekube.transport.base as tb
from homekube.plan.model import Change, Run


@pytest.fixture(autouse=True)
def _private_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(tb, "LOCK_PATH", str(tmp_path / "homekube.lock"))
    monkeypatch.setattr(ps, "STEP_RECORD", str(tmp_path / "homekube.step"))
    yield


def alive(tag: str) -> list[int]:
    """PIDs of processes whose command line contains `tag` (this test's own sleeps)."""
    out = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_gone(tag: str, limit: float = 30) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not alive(tag):
            return True
        time.sleep(0.1)
    return False


def start(script: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdin is not None
    p.stdin.write(script)
    p.stdin.flush()
    return p


def test_lock_then_script_then_hold_until_stdin_closes() -> None:
    # `cat` in the script must read /dev/null, not the rest of stdin (the hold)
    script = "echo facts; cat; printf 'END\\n'"
    end = tb.end_marker()
    first = start(tb.locked_script("run one", script, end))
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline() == "LOCKED\n"
    assert first.stdout.readline() == "facts\n"
    assert first.stdout.readline() == "END\n"
    assert first.stdout.readline() == "\n"
    assert tb.parse_end(first.stdout.readline().rstrip("\n"), end) == 0
    assert first.poll() is None  # still holding the lock

    second = subprocess.run(["bash", "-s"], input=tb.locked_script("run two", script, end),
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 75
    assert second.stdout.splitlines() == ["BUSY", "run one"]  # the script never ran

    first.stdin.close()  # the operator is done (or its connection dropped)
    assert first.wait(timeout=30) == 0
    third = start(tb.locked_script("run three", script, end))
    assert third.stdout is not None and third.stdin is not None
    lines = [third.stdout.readline() for _ in range(5)]
    assert lines == ["LOCKED\n", "facts\n", "END\n", "\n", f"{end} 0\n"]
    third.stdin.close()
    assert third.wait(timeout=30) == 0


def test_a_script_stops_when_its_operator_goes_away() -> None:
    """EOF on stdin before the end line: the whole job is killed, grandchildren included."""
    tag = f"sleep 30{os.getpid() % 1000:03d}.5"
    end = tb.end_marker()
    p = start(tb.watched(f"echo started; ( {tag} ) & {tag}; echo never", end))
    assert p.stdout is not None and p.stdin is not None
    assert p.stdout.readline() == "started\n"
    assert len(alive(tag)) == 2
    p.stdin.close()  # what sshd does when the operator's connection is gone
    assert wait_gone(tag), "the job survived its operator"
    rest = p.stdout.read()
    assert "never" not in rest
    assert p.wait(timeout=30) != 0


def test_a_step_that_exceeds_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    tag = f"sleep 31{os.getpid() % 1000:03d}.5"
    after = tmp_path / "after"
    ch = Change("h", "Host preparation", "packages", "install packages", "why",
                (Run(f"echo fetching; ( {tag} ) & {tag}", "apt-get install", timeout=5),
                 Run(f"touch {after}")))
    res = subprocess.run(["bash", "-s"], input=ps.render([ch], lambda r: r.timeout or 300),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    marks = [m for m in map(ps.parse_mark, res.stdout.splitlines()) if m is not None]
    assert ps.Mark("timeout", 0, 0, 5) in marks, res.stdout
    assert "fetching" in res.stdout
    # just before the limit, what the step still ran (a hung apt-get prints nothing itself)
    listing = res.stdout.split("still running after 3 s:\n", 1)[1]
    assert listing.count(tag) == 2, res.stdout
    assert not after.exists()
    assert wait_gone(tag, 15), "a timed-out step left processes behind"
    assert not Path(ps.STEP_RECORD).exists()


def test_a_steps_text_never_reaches_argv() -> None:
    """Secrets travel in the script: while a step runs, no process shows its text."""
    secret = "s3cr3t-" + os.urandom(6).hex()
    ch = Change("h", "p", "r", "with a secret", "why",
                (Run(f"x={secret}; sleep 30; echo \"$x\"", "use a secret", secret=True),))
    script = ps.render([ch])
    assert "'use a secret' secret 3<<" in script  # no process listing for a secret step
    end = tb.end_marker()
    p = start(tb.watched(script, end))
    assert p.stdout is not None and p.stdin is not None
    while "run 0 0" not in p.stdout.readline():
        pass
    time.sleep(0.5)
    cmdlines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    record = Path(ps.STEP_RECORD).read_text()
    p.stdin.close()
    p.wait(timeout=30)
    assert secret not in cmdlines
    assert secret not in record and "use a secret" in record


def test_lock_stops_a_step_left_by_an_ended_run() -> None:
    """A recorded step whose script shell is gone is orphaned: the next lock kills it."""
    tag = f"sleep 32{os.getpid() % 1000:03d}.5"
    # a grandchild in its own session: once orphaned, init reaps it like on a host
    pid = int(subprocess.run(["bash", "-c", f"setsid bash -c '{tag}; true' </dev/null >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True).stdout)
    time.sleep(0.2)
    st = Path(f"/proc/{pid}/stat").read_text().split()[21]
    dead = subprocess.run(["bash", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    Path(ps.STEP_RECORD).write_text(f"{pid} {st} {dead} 2026-01-01T00:00:00Z install packages\n")
    p = start(tb.lock_command("next run"))
    assert p.stdout is not None and p.stdin is not None
    note = p.stdout.readline()
    assert note.startswith("NOTE stopped an earlier homekube step") and "install packages" in note
    assert p.stdout.readline() == "LOCKED\n"
    assert wait_gone(tag, 5)
    p.stdin.close()
    p.wait(timeout=30)


def test_lock_names_a_step_whose_run_still_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorded step whose script shell still lives is not touched; the lock says STEP."""
    monkeypatch.setattr(tb, "STEP_SETTLE", 1)
    tag = f"sleep 33{os.getpid() % 1000:03d}.5"
    step = subprocess.Popen(["bash", "-c", f"{tag}; true"], start_new_session=True)
    owner = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.2)
        st = Path(f"/proc/{step.pid}/stat").read_text().split()[21]
        Path(ps.STEP_RECORD).write_text(f"{step.pid} {st} {owner.pid} 2026-01-01T00:00:00Z kubeadm init\n")
        res = subprocess.run(["bash", "-s"], input=tb.lock_command("next run"), capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 75
        assert res.stdout.splitlines()[0] == "STEP"
        assert "kubeadm init (since 2026-01-01T00:00:00Z" in res.stdout
        assert step.poll() is None
        err = tb.lock_refused("h2", "STEP", res.stdout.splitlines()[1])
        assert "an earlier homekube step still runs here: kubeadm init" in str(err)
    finally:
        os.killpg(step.pid, signal.SIGKILL)
        owner.kill()
        step.wait()
        owner.wait()
