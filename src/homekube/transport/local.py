"""Run on the machine homekube itself runs on (no SSH), e.g. a single-box setup."""

from __future__ import annotations

import asyncio
import contextlib
import os

from homekube.errors import ConnectError
from homekube.transport.base import (
    TIMED_OUT,
    ExecResult,
    LineSink,
    Transport,
    end_marker,
    lock_command,
    lock_refused,
    parse_end,
    watched,
)


class LocalTransport(Transport):
    def __init__(self, host: str, *, sudo: bool | None = None) -> None:
        super().__init__(host)
        self._sudo = (os.geteuid() != 0) if sudo is None else sudo
        self._lock: asyncio.subprocess.Process | None = None

    async def _spawn(self, argv: list[str], *, stderr: int) -> asyncio.subprocess.Process:
        """Start `argv` with piped stdin and stdout; a missing bash or sudo is a ConnectError."""
        try:
            return await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr)
        except OSError as e:
            raise ConnectError(f"cannot start {' '.join(argv[:3])} here: {e.strerror or e}",
                               host=self.host) from None

    def _argv(self) -> list[str]:
        return ["sudo", "-n", "bash", "-s"] if self._sudo else ["bash", "-s"]

    async def run(self, script: str, *, timeout: float | None = None,
                  on_line: LineSink | None = None) -> ExecResult:
        self.execs += 1
        end = end_marker()
        proc = await self._spawn(self._argv(), stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(watched(script, end).encode())
        errs = asyncio.ensure_future(proc.stderr.read())
        out: list[str] = []
        status: int | None = None
        try:
            async with asyncio.timeout(timeout):
                while status is None:
                    raw = await proc.stdout.readline()
                    if not raw:
                        break
                    line = raw.decode(errors="replace")
                    status = parse_end(line.rstrip("\n"), end)
                    if status is None:
                        out.append(line)
                        if on_line is not None and line.strip():
                            on_line(line.rstrip("\n"))
        except TimeoutError:
            proc.stdin.close()  # EOF: the script stops itself
            errs.cancel()
            await proc.wait()
            return ExecResult(TIMED_OUT, "".join(out), f"timed out after {timeout:g} s; stopped")
        except asyncio.CancelledError:
            proc.stdin.close()
            errs.cancel()
            raise
        if out and out[-1] == "\n":
            out.pop()
        proc.stdin.close()
        err = b""
        with contextlib.suppress(TimeoutError):
            err = await asyncio.wait_for(errs, 30)
        await proc.wait()
        if status is None:
            status = proc.returncode if proc.returncode else 255
        return ExecResult(status, "".join(out), err.decode(errors="replace"))

    async def lock(self, holder: str) -> None:
        self.execs += 1
        argv = [*self._argv()[:-1], "-c", lock_command(holder)]
        proc = await self._spawn(argv, stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        while True:
            line = (await proc.stdout.readline()).decode().strip()
            if not line.startswith("NOTE "):
                break
            self.notices.append(line.removeprefix("NOTE "))
        if line != "LOCKED":
            rest = (await proc.stdout.read()).decode().strip()
            await proc.wait()
            raise lock_refused(self.host, line, rest)
        self._lock = proc

    async def unlock(self) -> None:
        if self._lock is not None:
            if self._lock.stdin is not None:
                self._lock.stdin.close()
            await self._lock.wait()
            self._lock = None

    async def close(self) -> None:
        await self.unlock()
