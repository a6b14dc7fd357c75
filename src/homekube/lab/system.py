"""Small, careful wrappers around the machine: commands, processes the lab started, mounts.

The lab shares the machine with other people's processes, so it only ever signals a PID whose
start time and command line match what it recorded when it started that process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from homekube.errors import HomekubeError

log = logging.getLogger("homekube.lab")

CmdlineMatch = Callable[[list[str]], bool]

# Popen objects of daemons this process started: kept so they can be reaped (no zombies in a
# long pytest session) and so Python does not warn about them when they are collected.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

# command -> Debian package that provides it; installed on demand.
HOST_TOOLS: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "gpg": "gpg",
    "dpkg-deb": "dpkg",
    "unshare": "util-linux",
    "ssh": "openssh-client",
}


class LabError(HomekubeError):
    """The lab could not be built, started or stopped; the message says what to look at."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    step: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a machine command; a failure becomes a LabError carrying its stderr.

    Every command has a time limit: one still running after `timeout` seconds is killed with
    everything it started (its own session) and the step fails with a LabError naming
    `step` (default: the command line).
    """
    what = step or " ".join(argv)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise LabError(f"{what}: command not found: {argv[0]}") from e
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        raise LabError(
            f"{what}: did not finish within {timeout:.0f} s (stopped)",
            hint="the machine may be overloaded, or a download stalled; run it again",
        ) from None
    except BaseException:  # Ctrl-C: the child has its own session, so it never saw the signal
        _kill_session(proc)
        raise
    cp = subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)
    if check and cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip()
        raise LabError(f"{what} failed (exit {cp.returncode}): {detail}")
    return cp


def _kill_session(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=10)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (network namespaces, mounts, systemd-nspawn)",
            hint="run it as root, e.g. with sudo",
        )


def ensure_host_tools() -> None:
    """Install the Debian packages the lab needs when a tool is missing (first run, CI)."""
    missing = sorted(
        {
            pkg
            for tool, pkg in HOST_TOOLS.items()
            if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool))
        }
    )
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise LabError(f"missing host tools ({', '.join(missing)}) and no apt-get to install them")
    log.info("installing host packages: %s", " ".join(missing))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout=600, env=env, step="apt-get update (host tools)")
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        timeout=900,
        env=env,
        step=f"installing host tools ({', '.join(missing)})",
    )


def missing_packages(packages: Sequence[str]) -> list[str]:
    """The Debian packages of `packages` that are not installed."""
    missing = []
    for pkg in packages:
        cp = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg], check=False)
        if not cp.stdout.startswith("ii"):
            missing.append(pkg)
    return missing


def ensure_packages(packages: Sequence[str], why: str) -> None:
    """apt-get install the packages that are missing (first run, CI)."""
    missing = missing_packages(packages)
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise LabError(f"{why} needs {', '.join(missing)} and there is no apt-get to install them")
    log.info("installing %s (%s)", " ".join(missing), why)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        timeout=900,
        env=env,
    )


def package_version(package: str) -> str | None:
    cp = run(["dpkg-query", "-W", "-f=${Version}", package], check=False)
    return (cp.stdout.strip() or None) if cp.returncode == 0 else None


def run_long(
    argv: Sequence[str],
    *,
    what: str,
    log_path: Path,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    heartbeat: Callable[[float, Path], None] | None = None,
    every: float = 30.0,
    summarize: Callable[[Path], str] = lambda p: log_tail(p),
) -> None:
    """Run a long command with its output in log_path; heartbeat(elapsed, log) every `every` s.

    It runs in its own session so a timeout can kill it with all its children (a go build's
    compilers). A failure raises LabError naming `what` and quoting summarize(log), by default
    the log's last lines.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log_path.open("wb") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=None if env is None else dict(env),
                start_new_session=True,
            )
        except FileNotFoundError as e:
            raise LabError(f"{what}: command not found: {argv[0]}") from e
        _share_niceness(proc.pid)
        next_beat = t0 + every
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now - t0 > timeout:
                    raise LabError(
                        f"{what}: did not finish within {timeout:.0f} s (stopped); from "
                        f"{log_path}:\n" + summarize(log_path)
                    )
                if heartbeat is not None and now >= next_beat:
                    heartbeat(now - t0, log_path)
                    next_beat = now + every
        except BaseException:  # timeout or Ctrl-C: the child's own session never saw a signal
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc != 0:
        raise LabError(
            f"{what}: failed (exit {rc}); from {log_path}:\n" + summarize(log_path)
        )


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the cleanup of `run`/`run_long` (which kills the
    command's own session) runs when this process is terminated, not only on Ctrl-C."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _share_niceness(pid: int) -> None:
    """Give a child that runs in its own session this process's niceness for that session.

    With the kernel's autogroup scheduling (sched_autogroup_enabled), every session is one
    scheduling group and a nice value only weighs inside its group: `nice homekube lab
    artifacts` would not make its go build (a new session) yield to anything else. The
    session's own nice value (/proc/PID/autogroup) does; raising it needs no privilege.
    """
    niceness = os.nice(0)
    if niceness <= 0:
        return
    with contextlib.suppress(OSError):  # no autogroup support: the process nice still applies
        Path(f"/proc/{pid}/autogroup").write_text(f"{min(niceness, 19)}\n")


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


# ---------------------------------------------------------------------------------------------
# processes


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def proc_starttime(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of stat(5); fields[0] is field 3


def proc_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process; None when it is gone or a zombie."""
    reap_children()
    if proc_starttime(pid) is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def write_pid_record(path: Path, pid: int) -> None:
    """Record pid and start time, so a recycled PID is never mistaken for ours."""
    start = proc_starttime(pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid} {start if start is not None else 0}\n")
    tmp.replace(path)


def read_pid_record(path: Path) -> tuple[int, int] | None:
    try:
        parts = path.read_text().split()
        return int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        return None


def live_pid(path: Path, match: CmdlineMatch) -> int | None:
    """The recorded PID if that very process still runs and looks like what we started."""
    rec = read_pid_record(path)
    if rec is None:
        return None
    pid, start = rec
    if start and proc_starttime(pid) != start:
        return None
    argv = proc_cmdline(pid)
    if argv is None or not match(argv):
        return None
    return pid


def spawn_detached(
    argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None
) -> int:
    """Start a daemon in its own session, output appended to log_path; returns its PID."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
            close_fds=True,
            cwd="/",  # never pin the caller's directory (or a mount) for the daemon's lifetime
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def reap_children() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def wait_gone(pid: int, match: CmdlineMatch, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        argv = proc_cmdline(pid)
        if argv is None or not match(argv):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def signal_if_match(pid: int, match: CmdlineMatch, sig: int) -> bool:
    argv = proc_cmdline(pid)
    if argv is None or not match(argv):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    return True


def terminate(pid: int, match: CmdlineMatch, *, grace: float, what: str) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL: only while the cmdline matches."""
    if not signal_if_match(pid, match, signal.SIGTERM):
        return
    if wait_gone(pid, match, grace):
        return
    log.warning("%s (pid %d) did not stop in %.0f s: SIGKILL", what, pid, grace)
    signal_if_match(pid, match, signal.SIGKILL)
    wait_gone(pid, match, 5)


def find_processes(match: CmdlineMatch) -> list[int]:
    """PIDs whose command line matches; used to find what a crashed run left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        argv = proc_cmdline(pid)
        if argv is not None and match(argv):
            found.append(pid)
    return found


# ---------------------------------------------------------------------------------------------
# mounts


def _unescape_mount(path: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(path):
        octal = path[i + 1 : i + 4]
        if path[i] == "\\" and len(octal) == 3 and octal.isdigit():
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mount_points() -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(Path(_unescape_mount(fields[4])))
    return points


def is_mountpoint(path: Path) -> bool:
    return path in mount_points()


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first (the order to unmount them in)."""
    found = {p for p in mount_points() if p == path or path in p.parents}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount(path: Path) -> bool:
    """Unmount (lazily if busy); True when nothing is mounted there any more."""
    for _ in range(5):
        if not is_mountpoint(path):
            return True
        if run(["umount", str(path)], check=False).returncode != 0:
            run(["umount", "-l", str(path)], check=False)
    return not is_mountpoint(path)


# ---------------------------------------------------------------------------------------------
# locking


def lend_priority(holder: int) -> None:
    """Priority inheritance for a lock: when the holder is nicer than this waiting process
    (a build started in the background with `nice`), give it, the commands it runs in their
    own sessions (a go build) and their processes this process's niceness, so that waiting
    for the build takes no longer than the build itself needs. Lowering a nice value needs
    root; without it nothing changes."""
    mine = os.nice(0)
    fields = _stat_fields(holder)
    if fields is None or int(fields[16]) <= mine:  # field 19 of stat(5): nice
        return

    def stats() -> dict[int, list[str]]:
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and (f := _stat_fields(int(d.name))) is not None:
                out[int(d.name)] = f
        return out

    def renice(pids: Iterable[int]) -> None:
        for pid in pids:
            # a nice value belongs to a thread, and a process's children inherit the value of
            # the thread that forked them (go forks its compilers from any thread)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError, ValueError):
                        os.setpriority(os.PRIO_PROCESS, int(task.name), mine)

    # the holder's children that lead their own session (run/run_long start them so)
    leaders = {pid for pid, f in stats().items() if f[1] == str(holder) and f[3] == str(pid)}
    renice([holder, *leaders])
    for pid in leaders:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(f"{mine}\n")
    # after the leaders: what they start from now on inherits the new value
    renice(pid for pid, f in stats().items() if int(f[3]) in leaders)
    log.info("raised the priority of pid %d (nice %s) to this process's (nice %d)",
             holder, fields[16], mine)


@contextlib.contextmanager
def exclusive_lock(
    lock_file: Path,
    *,
    timeout: float = 900,
    on_wait: Callable[[int], None] | None = None,
    done: Callable[[], bool] | None = None,
) -> Iterator[bool]:
    """Serialise lab commands: two `up`s at once would fight over one bridge.

    Yields True holding the lock. on_wait(holder's pid) is called once when this process has
    to wait; done() is asked while waiting, and when it is true the wait ends without the
    lock (yields False): what the caller waited for was made by the holder, which may go on
    to hold the lock for other work.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a+") as fh:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LabError(
                        f"another lab command holds {lock_file} since {timeout:.0f} s"
                    ) from None
                if not told:
                    fh.seek(0)
                    holder = fh.read().strip()
                    log.info("waiting for another lab command (%s)", holder)
                    told = True
                    if on_wait is not None and re.fullmatch(r"pid [0-9]+", holder):
                        on_wait(int(holder.split()[1]))
                if done is not None and done():
                    yield False
                    return
                time.sleep(0.2)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
