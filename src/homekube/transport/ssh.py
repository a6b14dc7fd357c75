"""SSH transport (asyncssh): key auth, known_hosts always verified, ~/.ssh/config honoured."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from homekube.errors import ConnectError, TransferError
from homekube.transport._asyncssh import asyncssh
from homekube.transport.base import (
    TIMED_OUT,
    ExecResult,
    LineSink,
    Transport,
    create_private,
    end_marker,
    lock_command,
    lock_refused,
    locked_script,
    parse_end,
    watched,
)


@dataclass(frozen=True)
class SshTarget:
    name: str
    host: str  # address or ~/.ssh/config alias
    user: str | None
    port: int | None
    key: str | None
    known_hosts: str | None
    config: str | None
    connect_timeout: float = 10.0


def _expand(p: str | None) -> str | None:
    return os.path.expanduser(p) if p else None


class SshTransport(Transport):
    def __init__(self, target: SshTarget, conn: asyncssh.SSHClientConnection, user: str) -> None:
        super().__init__(target.name)
        self.target = target
        self._conn = conn
        self._sudo = user != "root"
        self._lock: asyncssh.SSHClientProcess[str] | None = None

    @classmethod
    async def connect(cls, t: SshTarget) -> SshTransport:
        key = _expand(t.key)
        kh = _expand(t.known_hosts)
        cfg = _expand(t.config)
        if key is not None and not Path(key).is_file():
            raise ConnectError(f"SSH key {key} does not exist", host=t.name,
                               hint="set ssh.key in cluster.yaml")
        if kh is not None and not Path(kh).is_file():
            raise ConnectError(f"known_hosts file {kh} does not exist", host=t.name,
                               hint="add the host key first (ssh-keyscan, or one ssh login)")
        opts: dict[str, object] = {
            "known_hosts": kh if kh is not None else (),
            "connect_timeout": t.connect_timeout,
            "config": [cfg] if cfg and Path(cfg).is_file() else [],
            "agent_path": None,
            "keepalive_interval": 15,
        }
        if key is not None:
            opts["client_keys"] = [key]
        if t.user is not None:
            opts["username"] = t.user
        if t.port is not None:
            opts["port"] = t.port
        try:
            conn = await asyncssh.connect(t.host, **opts)
        except asyncssh.HostKeyNotVerifiable as e:
            raise ConnectError(
                f"host key of {t.host} is not trusted ({e.reason})", host=t.name,
                hint=f"check the host, then add its key to {kh or 'known_hosts'}",
            ) from None
        except asyncssh.PermissionDenied:
            raise ConnectError(
                f"authentication failed as {t.user or 'the configured user'} with key {key}",
                host=t.name, hint="check ssh.user and ssh.key",
            ) from None
        except (TimeoutError, asyncssh.ConnectionLost) as e:
            raise ConnectError(f"cannot reach {t.host}:{t.port or 22} ({e or 'timed out'})",
                               host=t.name) from None
        except (OSError, asyncssh.Error) as e:
            raise ConnectError(f"cannot connect to {t.host}:{t.port or 22}: {e}", host=t.name) from None
        user = str(conn.get_extra_info("username") or t.user or "root")
        if user != "root":
            await _check_sudo(conn, t.name, user)
        return cls(t, conn, user)

    def _wrap(self, cmd: str) -> str:
        return f"sudo -n {cmd}" if self._sudo else cmd

    async def run(self, script: str, *, timeout: float | None = None,
                  on_line: LineSink | None = None) -> ExecResult:
        self.execs += 1
        end = end_marker()
        try:
            proc = await self._conn.create_process(self._wrap("bash -s"), errors="replace")
            proc.stdin.write(watched(script, end))
        except (asyncssh.Error, OSError) as e:
            raise ConnectError(f"connection lost: {e}", host=self.host) from None
        return await _follow(proc, end, self.host, timeout, on_line, release=True)

    async def get_file(self, remote: str, local: Path) -> None:
        """SFTP, falling back to base64 over stdout when the host has no SFTP subsystem.

        SFTP runs as the login user: with sudo, the caller makes `remote` readable to it.
        """
        try:
            sftp = await self._conn.start_sftp_client()
        except (asyncssh.Error, OSError):
            await super().get_file(remote, local)
            return
        try:
            create_private(local)
            await sftp.get(remote, str(local))
        except (asyncssh.Error, OSError) as e:
            raise TransferError(f"cannot copy {remote} over SFTP: {e}", host=self.host) from None
        finally:
            sftp.exit()
            with contextlib.suppress(asyncssh.Error, OSError):
                await sftp.wait_closed()

    async def _take_lock(self, script: str) -> asyncssh.SSHClientProcess[str]:
        """Feed `script` (it starts with the lock prelude) to `bash -s`; return once LOCKED.

        The process stays alive holding the lock until `unlock()` closes its stdin. Lines
        before the answer are notices (an orphaned step the host stopped).
        """
        self.execs += 1
        proc = await self._conn.create_process(self._wrap("bash -s"), errors="replace")
        proc.stdin.write(script)
        while True:
            line = (await proc.stdout.readline()).strip()
            if not line.startswith("NOTE "):
                break
            self.notices.append(line.removeprefix("NOTE "))
        if line != "LOCKED":
            rest = (await proc.stdout.read()).strip()
            proc.close()
            raise lock_refused(self.host, line, rest)
        self._lock = proc
        return proc

    async def lock(self, holder: str) -> None:
        try:
            await self._take_lock(lock_command(holder))
        except (asyncssh.Error, OSError) as e:
            raise ConnectError(f"connection lost: {e}", host=self.host) from None

    async def lock_and_run(self, holder: str, script: str, *,
                           timeout: float | None = None) -> ExecResult:
        end = end_marker()
        try:
            proc = await self._take_lock(locked_script(holder, script, end))
        except (asyncssh.Error, OSError) as e:
            raise ConnectError(f"connection lost: {e}", host=self.host) from None
        # stdin stays open: it holds the lock until unlock()
        return await _follow(proc, end, self.host, timeout, None, release=False)

    async def unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(asyncssh.Error, OSError):
                self._lock.stdin.write_eof()
                await asyncio.wait_for(self._lock.wait_closed(), 5)
            self._lock = None

    async def close(self) -> None:
        await self.unlock()
        self._conn.close()
        with contextlib.suppress(Exception):
            await self._conn.wait_closed()


async def _follow(proc: asyncssh.SSHClientProcess[str], end: str, host: str, timeout: float | None,
                  on_line: LineSink | None, *, release: bool) -> ExecResult:
    """Read a `watched` script's stdout up to its end line; then, with `release`, close stdin
    and collect stderr. On the deadline or cancellation the channel is closed, which makes
    the host stop the script (its stdin reaches EOF)."""
    out: list[str] = []
    errs: asyncio.Task[str] | None = asyncio.ensure_future(proc.stderr.read()) if release else None
    status: int | None = None
    try:
        async with asyncio.timeout(timeout):
            while status is None:
                line = await proc.stdout.readline()
                if not line:
                    break
                status = parse_end(line.rstrip("\n"), end)
                if status is None:
                    out.append(line)
                    if on_line is not None and line.strip():
                        on_line(line.rstrip("\n"))
    except TimeoutError:
        proc.close()
        if errs is not None:
            errs.cancel()
        return ExecResult(TIMED_OUT, "".join(out), f"timed out after {timeout:g} s; stopped on the host")
    except asyncio.CancelledError:
        proc.close()
        if errs is not None:
            errs.cancel()
        raise
    except (asyncssh.Error, OSError) as e:
        proc.close()
        if errs is not None:
            errs.cancel()
        raise ConnectError(f"connection lost: {e}", host=host) from None
    if out and out[-1] == "\n":
        out.pop()  # the blank line watched() prints before its end line
    text = "".join(out)
    if status is None:  # the channel closed without the end line: the script was killed
        proc.close()
        err = ""
        if errs is not None:
            with contextlib.suppress(asyncio.CancelledError, asyncssh.Error, OSError):
                err = await asyncio.wait_for(errs, 5)
        return ExecResult(255, text, err or "the script stopped before its end")
    if not release:
        return ExecResult(status, text, "")
    err = ""
    with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
        proc.stdin.write_eof()
        err = await asyncio.wait_for(errs, 30) if errs is not None else ""
        await asyncio.wait_for(proc.wait_closed(), 30)
    proc.close()
    return ExecResult(status, text, err)


async def _check_sudo(conn: asyncssh.SSHClientConnection, host: str, user: str) -> None:
    """A non-root login must become root without a password; find out before anything runs.

    Otherwise the first script fails halfway through being sent, and the error says only
    that the channel closed. One extra exec, for non-root logins only.
    """
    try:
        res = await asyncio.wait_for(conn.run("sudo -n true", check=False), 30)
    except (TimeoutError, asyncssh.Error, OSError) as e:
        conn.close()
        raise ConnectError(f"checking sudo as {user} failed: {e}", host=host) from None
    if res.exit_status != 0:
        conn.close()
        err = res.stderr if isinstance(res.stderr, str) else (res.stderr or b"").decode()
        why = (err.strip().splitlines() or ["exit status " + str(res.exit_status)])[-1]
        raise ConnectError(
            f"{user} cannot become root with `sudo -n` ({why})", host=host,
            hint="give this user passwordless sudo (NOPASSWD), or log in as root (ssh.user)",
        )
