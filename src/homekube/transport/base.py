"""The host interface: run a script (fed on stdin, never in argv), and hold a host lock.

Scripts travel on stdin so that secret material (keys, tokens) never shows up in a process
list on the host. Every call counts as one exec; `execs` lets tests and benchmarks check the
"facts cost one exec per host" promise.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from homekube import shell


@dataclass(frozen=True)
class ExecResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


#: called with each line of stdout (without its newline) as it arrives
LineSink = Callable[[str], None]

LOCK_PATH = "/run/homekube.lock"
#: exit status of a script the operator stopped at its deadline (like coreutils timeout)
TIMED_OUT = 124


class Transport(ABC):
    """One connection to one host."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.execs = 0
        #: things the host said while being locked (e.g. an orphaned step it stopped)
        self.notices: list[str] = []

    @abstractmethod
    async def run(self, script: str, *, timeout: float | None = None,
                  on_line: LineSink | None = None) -> ExecResult:
        """Run `script` with bash on the host (as root, via sudo when needed).

        `on_line` sees stdout line by line while the script runs. When `timeout` passes, or
        the caller is cancelled, the script is stopped on the host too (see `watched`), and
        the result has exit status TIMED_OUT.
        """

    @abstractmethod
    async def lock(self, holder: str) -> None:
        """Take the host lock; raise LockedError when another run holds it.

        The lock is a `flock` held by a process whose life is tied to this connection, so a
        crashed or killed run can never leave a stale lock behind.
        """

    @abstractmethod
    async def unlock(self) -> None: ...

    async def lock_and_run(self, holder: str, script: str, *,
                           timeout: float | None = None) -> ExecResult:
        """Take the host lock, then run `script` under it.

        Every apply starts with lock + facts, so SshTransport does both in one exec (one
        channel, one shell on the host). This default is the plain two-step version.
        """
        await self.lock(holder)
        return await self.run(script, timeout=timeout)

    async def get_file(self, remote: str, local: Path) -> None:
        """Copy `remote` from the host into `local` (created 0600 when absent, else overwritten).

        This default sends the file base64-encoded over stdout: right for small files and
        every transport; SshTransport overrides it with SFTP. Raises TransferError on failure.
        """
        from homekube.errors import TransferError

        res = await self.run(shell.Cmd("base64", "-w0", remote).text, timeout=3600)
        if not res.ok:
            raise TransferError(f"cannot read {remote}: {res.stderr.strip()[-300:]}", host=self.host)
        try:
            data = base64.b64decode(res.stdout.strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise TransferError(f"{remote} arrived garbled: {e}", host=self.host) from None
        try:
            _write_private(local, data)
        except OSError as e:
            raise TransferError(f"cannot write the copy of {remote} to {local}: {e.strerror or e}",
                                host=self.host) from None

    @abstractmethod
    async def close(self) -> None: ...


def lock_refused(host: str, line: str, rest: str) -> Exception:
    """The error for a lock command that did not answer LOCKED (shared by every transport)."""
    from homekube.errors import ConnectError, LockedError

    if line == "BUSY":
        return LockedError(f"another homekube run holds the host lock ({rest or 'unknown'})",
                           host=host, hint="wait for it to finish")
    if line == "STEP":
        return LockedError(f"an earlier homekube step still runs here: {rest or 'unknown'}",
                           host=host, hint="it is stopped when the run that started it ends; wait "
                           "for that, or stop it yourself (`kill -- -PID` on the host)")
    return ConnectError(f"cannot take the host lock: {line or 'no answer'}", host=host)


#: seconds a new run waits for a step of an ended run to finish being stopped
STEP_SETTLE = 25


def lock_prelude(holder: str) -> str:
    """Take the lock on fd 9 and say LOCKED, or say BUSY and who holds it, and exit 75.

    With the lock taken, a step recorded in STEP_RECORD whose process group still runs is
    left over from an ended run: if the shell that ran it is still alive it is being stopped
    (see `watched`), so wait for that a little, then say STEP (what, since when) and exit 75;
    if that shell is gone, nothing will ever stop it, so stop it here and say NOTE first.
    """
    from homekube.plan.script import KILL_GRACE, STEP_RECORD

    settings = shell.lines(
        shell.assign("hk_lock_path", LOCK_PATH), shell.assign("hk_record", STEP_RECORD),
        shell.assign("hk_settle", str(STEP_SETTLE)), shell.assign("hk_grace", str(KILL_GRACE)),
        shell.assign("hk_holder", holder))
    return f"{settings.text}\n{shell.script('lock.sh')}hk_lock\n"


#: the lock is held until the operator closes stdin (or its connection drops)
HOLD = "exec cat >/dev/null\n"


def lock_command(holder: str) -> str:
    return lock_prelude(holder) + HOLD


def end_marker() -> str:
    """A fresh marker for `watched` (unique per exec, so no output can fake it)."""
    return f"@@homekube-end-{secrets.token_hex(6)}@@"


def watched(script: str, end: str) -> str:
    """Run `script` as a job in its own process group, print `<end> <status>` when it ends,
    then wait for stdin's EOF; stop the job if that EOF comes first.

    Fed to `bash -s`, which reads stdin only as far as it runs: first this text, then the
    channel itself, which the operator keeps open until it has read the end marker. EOF
    before that means the operator is gone (killed, Ctrl-C, its deadline, its connection
    lost): the job's process group gets TERM, then KILL, and so does the process group of
    the step it was running (a step runs under `timeout`, which leads its own group). The
    job's stdin is /dev/null, and it never holds the channel's stdin or the host lock's fd.
    """
    from homekube.plan.script import KILL_GRACE, STEP_RECORD

    # Everything after the body sits in a function so that bash has read all of its input
    # before the watcher starts reading the same stdin for EOF.
    return (
        f"{shell.assign('hk_record', STEP_RECORD).text}\n{shell.assign('hk_grace', str(KILL_GRACE)).text}\n"
        f"{shell.assign('hk_end', end).text}\n"
        f"hk_body() {{\n{script}\n}}\n"
        f"{shell.script('watch.sh')}"
        "hk_watched\n"
    )


def parse_end(line: str, end: str) -> int | None:
    """The exit status on `watched`'s end line, or None if `line` is not it."""
    if line.startswith(end + " "):
        tail = line[len(end) + 1 :].strip()
        return int(tail) if tail.isdigit() else 255
    return None


def locked_script(holder: str, script: str, end: str) -> str:
    """Lock, run `script` watched (stdin closed to it), then keep holding the lock until
    stdin's EOF. Fed to `bash -s`."""
    return lock_prelude(holder) + watched(script, end)


def _write_private(path: Path, data: bytes) -> None:
    create_private(path)
    with path.open("wb") as fh:
        fh.write(data)


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists, so no byte is ever world-readable."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)
