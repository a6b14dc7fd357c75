"""A scripted transport for fast unit tests of pure logic around the executor."""

from __future__ import annotations

from collections.abc import Callable

from homekube.transport.base import ExecResult, LineSink, Transport

Handler = Callable[[str], ExecResult]


class FakeTransport(Transport):
    def __init__(self, host: str, handler: Handler) -> None:
        super().__init__(host)
        self.handler = handler
        self.scripts: list[str] = []
        self.locked = False

    async def run(self, script: str, *, timeout: float | None = None,
                  on_line: LineSink | None = None) -> ExecResult:
        self.execs += 1
        self.scripts.append(script)
        res = self.handler(script)
        if on_line is not None:
            for line in res.stdout.splitlines():
                if line.strip():
                    on_line(line)
        return res

    async def lock(self, holder: str) -> None:
        self.execs += 1
        self.locked = True

    async def unlock(self) -> None:
        self.locked = False

    async def close(self) -> None:
        self.locked = False
