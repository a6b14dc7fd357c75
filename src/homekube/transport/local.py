"""Run on the machine homekube itself runs on (no SSH), e.g. a single-box setup."""

from __future__ import annotations

import asyncio
import os

from homekube.transport.base import ExecResult, Transport, lock_command, lock_refused


class LocalTransport(Transport):
    def __init__(self, host: str, *, sudo: bool | None = None) -> None:
        super().__init__(host)
        self._sudo = (os.geteuid() != 0) if sudo is None else sudo
        self._lock: asyncio.subprocess.Process | None = None

    def _argv(self) -> list[str]:
        return ["sudo", "-n", "bash", "-s"] if self._sudo else ["bash", "-s"]

    async def run(self, script: str, *, timeout: float | None = None) -> ExecResult:
        self.execs += 1
        proc = await asyncio.create_subprocess_exec(
            *self._argv(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(script.encode()), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return ExecResult(124, "", f"timed out after {timeout}s")
        return ExecResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    async def lock(self, holder: str) -> None:
        self.execs += 1
        argv = [*self._argv()[:-1], "-c", lock_command(holder)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode().strip()
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
