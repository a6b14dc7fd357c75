"""run_long, which runs the lab's go builds: a niced caller's build yields, a killed one stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import os, sys
from pathlib import Path
from homekube.lab.system import run_long, stop_on_sigterm
os.nice(int(sys.argv[1]))
stop_on_sigterm()
run_long(sys.argv[3:], what="test", log_path=Path(sys.argv[2]), timeout=300)
"""


def _python(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, *args])


def test_a_niced_caller_gives_its_command_session_the_same_niceness(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    probe = ("echo nice=$(cut -d' ' -f19 /proc/self/stat); "
             "cat /proc/self/autogroup 2>/dev/null || echo no-autogroup")
    assert _python("10", str(log), "sh", "-c", probe).wait(timeout=60) == 0
    out = log.read_text()
    assert "nice=10" in out, out
    # with autogroup scheduling the command's own session (a scheduling group) is niced too
    assert "no-autogroup" in out or out.rstrip().endswith("nice 10"), out


def test_a_terminated_caller_stops_its_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    proc = _python("0", str(tmp_path / "out.log"), "sh", "-c",
                   f"echo $$ > {pid_file}; exec sleep 300")
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while _alive(child):  # killed with its session, reaped by init
        assert time.monotonic() < deadline, f"pid {child} outlived its caller"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


HOLDER = """
import os, sys
from pathlib import Path
from homekube.lab.system import exclusive_lock, run_long
os.nice(10)
with exclusive_lock(Path(sys.argv[1])):
    run_long(["sh", "-c", f"echo $$ > {sys.argv[2]}; exec sleep 300"], what="test",
             log_path=Path(sys.argv[3]), timeout=300)
"""


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_waiting_for_a_niced_lock_holder_lends_it_this_priority(tmp_path: Path) -> None:
    """Priority inheritance: a build started with nice in the background runs at the
    waiter's priority once someone waits for it (when the waiter may lower nice values)."""
    from homekube.lab.system import exclusive_lock, lend_priority

    lock, pid_file = tmp_path / "lock", tmp_path / "pid"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(pid_file),
                               str(tmp_path / "out.log")])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _nice(holder.pid) == _nice(child) == 10
        waited: list[tuple[int, int, int]] = []

        def on_wait(pid: int) -> None:
            lend_priority(pid)
            waited.append((pid, _nice(pid), _nice(child)))
            holder.send_signal(signal.SIGINT)  # let go of the lock: the wait ends

        with exclusive_lock(lock, timeout=60, on_wait=on_wait):
            pass
        expected = os.nice(0) if os.geteuid() == 0 else 10  # only root lowers nice values
        assert waited == [(holder.pid, expected, expected)]
    finally:
        holder.kill()
        holder.wait(timeout=60)


def test_a_waiter_stops_waiting_once_what_it_waits_for_is_made(tmp_path: Path) -> None:
    """The build lock's holder builds one recipe after another and takes the lock again at
    once; a caller that needs one of them stops waiting when that one is in the cache."""
    from homekube.lab.system import exclusive_lock

    lock, made = tmp_path / "lock", tmp_path / "made"
    holds = "import sys, time\nfrom pathlib import Path\nfrom homekube.lab.system import " \
            "exclusive_lock\nwith exclusive_lock(Path(sys.argv[1])):\n" \
            "    Path(sys.argv[2]).write_text('x')\n    time.sleep(300)\n"
    holder = subprocess.Popen([sys.executable, "-c", holds, str(lock), str(tmp_path / "held")])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "held").is_file():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)

        def on_wait(pid: int) -> None:
            made.write_text("built by the holder")

        with exclusive_lock(lock, timeout=60, on_wait=on_wait, done=made.is_file) as locked:
            assert locked is False
        assert holder.poll() is None  # the holder still holds it
        holder.kill()
        holder.wait(timeout=60)
        with exclusive_lock(lock, timeout=60, done=made.is_file) as locked:  # free: taken
            assert locked is True
    finally:
        holder.kill()
        holder.wait(timeout=60)
