"""Supervisor of one lab host: `python -I .../launcher.py HOSTDIR -- systemd-nspawn ...`.

It exists for two reasons. The machine has no systemd, so something must put the host into
its own cgroups before nspawn starts (the supervisor joins them and nspawn inherits them).
And `reboot` inside a host makes systemd-nspawn exit with 133, so the supervisor starts it
again unless HOSTDIR/stop exists (created by `down` and `stop_host` before they signal).
HOSTDIR/nspawn.pid always names the current systemd-nspawn (PID and start time, the format
of system.write_pid_record).

Standard library only, and run by file path rather than `-m`: importing the homekube package
would cost ~20 MiB of memory per host for as long as the host runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

REBOOT_EXIT = 133


def write_pid_record(path: Path, pid: int) -> None:
    stat = Path(f"/proc/{pid}/stat").read_text()
    start = stat[stat.rfind(")") + 2 :].split()[19]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid} {start}\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m homekube.lab.launcher HOSTDIR -- COMMAND...", file=sys.stderr)
        return 2
    host_dir, command = Path(args[0]), args[2:]
    stop = host_dir / "stop"
    for cg in (host_dir / "cgroups").read_text().splitlines():
        if cg.strip():
            (Path(cg) / "cgroup.procs").write_text(f"{os.getpid()}\n")

    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stop.touch()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        write_pid_record(host_dir / "nspawn.pid", child.pid)
        rc = child.wait()
        print(f"[homekube lab] systemd-nspawn exited rc={rc}", flush=True)
        if rc != REBOOT_EXIT or stop.exists():
            return rc
        print("[homekube lab] host rebooted: starting it again", flush=True)


if __name__ == "__main__":
    sys.exit(main())
