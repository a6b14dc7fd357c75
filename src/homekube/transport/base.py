"""The host interface: run a script (fed on stdin, never in argv), and hold a host lock.

Scripts travel on stdin so that secret material (keys, tokens) never shows up in a process
list on the host. Every call counts as one exec; `execs` lets tests and benchmarks check the
"facts cost one exec per host" promise.
"""

from __future__ import annotations

import base64
import binascii
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExecResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


LOCK_PATH = "/run/homekube.lock"


class Transport(ABC):
    """One connection to one host."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.execs = 0

    @abstractmethod
    async def run(self, script: str, *, timeout: float | None = None) -> ExecResult:
        """Run `script` with bash on the host (as root, via sudo when needed)."""

    @abstractmethod
    async def lock(self, holder: str) -> None:
        """Take the host lock; raise LockedError when another run holds it.

        The lock is a `flock` held by a process whose life is tied to this connection, so a
        crashed or killed run can never leave a stale lock behind.
        """

    @abstractmethod
    async def unlock(self) -> None: ...

    async def lock_and_run(self, holder: str, script: str, *, until: str,
                           timeout: float | None = None) -> ExecResult:
        """Take the host lock, then run `script` under it; `until` is its last output line.

        Every apply starts with lock + facts, so SshTransport does both in one exec (one
        channel, one shell on the host). This default is the plain two-step version.
        """
        await self.lock(holder)
        return await self.run(script, timeout=timeout)

    async def get_file(self, remote: str, local: Path) -> None:
        """Copy `remote` from the host into `local` (created 0600 when absent, else overwritten).

        This default sends the file base64-encoded over stdout: right for small files and
        every transport; SshTransport overrides it with SFTP. Raises OSError on failure.
        """
        from homekube.facts.base import shell_quote

        res = await self.run(f"base64 -w0 {shell_quote(remote)}", timeout=3600)
        if not res.ok:
            raise OSError(f"{self.host}: cannot read {remote}: {res.stderr.strip()[-300:]}")
        try:
            data = base64.b64decode(res.stdout.strip(), validate=True)
        except (binascii.Error, ValueError) as e:
            raise OSError(f"{self.host}: {remote} arrived garbled: {e}") from None
        _write_private(local, data)

    @abstractmethod
    async def close(self) -> None: ...


def lock_refused(host: str, line: str, rest: str) -> Exception:
    """The error for a lock command that did not answer LOCKED (shared by every transport)."""
    from homekube.errors import ConnectError, LockedError

    if line == "BUSY":
        return LockedError(f"another homekube run holds the host lock ({rest or 'unknown'})",
                           host=host, hint="wait for it to finish")
    return ConnectError(f"cannot take the host lock: {line or 'no answer'}", host=host)


def lock_prelude(holder: str) -> str:
    """Take the lock on fd 9 and say LOCKED, or say BUSY and who holds it, and exit 75."""
    from homekube.facts.base import shell_quote

    return (
        f"exec 9>>{LOCK_PATH}; "
        f"if flock -n 9; then printf '%s\\n' {shell_quote(holder)} > {LOCK_PATH}.holder; echo LOCKED; "
        f"else echo BUSY; cat {LOCK_PATH}.holder 2>/dev/null; exit 75; fi\n"
    )


#: the lock is held until the operator closes stdin (or its connection drops)
HOLD = "exec cat >/dev/null\n"


def lock_command(holder: str) -> str:
    return lock_prelude(holder) + HOLD


def locked_script(holder: str, script: str) -> str:
    """Lock, run `script` (stdin closed to it: stdin carries the script and then the hold),
    then keep holding the lock. Fed to `bash -s`, which reads stdin only as far as it runs."""
    return f"{lock_prelude(holder)}{{\n{script}\n}} </dev/null\n{HOLD}"


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
