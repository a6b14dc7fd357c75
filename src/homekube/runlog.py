"""A log of every run that changes hosts: what ran where, its output, and how it ended.

One file per run in `<state dir>/logs/` (0600 in a 0700 directory), named after the time and
the verb, so that after a failure `log: PATH` points at the whole story, not only the last
lines the error message shows. Secret material never reaches it: commands marked secret are
logged by description only, scripts are never logged, and every line passes through
`redact`, which masks private keys, kubeadm tokens and certificate keys, and anything that
looks like a bearer token.
"""

from __future__ import annotations

import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from homekube.executor import Event

#: logs kept per cluster; older ones are removed when a new run starts
KEEP = 50

_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
_SECRETS = (
    (re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b"), "<bootstrap token>"),
    (re.compile(r"(?i)(certificate[-_ ]key[\"':= ]+)[0-9a-f]{64}"), r"\1<certificate key>"),
    (re.compile(r"(?i)(bearer\s+|token[\"':= ]+)[A-Za-z0-9._~+/=-]{20,}"), r"\1<token>"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"), "<jwt>"),
)


def redact(text: str) -> str:
    """Mask secret material in `text` (keys, tokens); everything else is kept."""
    text = _PEM_KEY.sub("<private key>", text)
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def logs_dir(state: Path) -> Path:
    return state / "logs"


class RunLog:
    """An open run log; `event` records progress, `close` the outcome."""

    def __init__(self, state: Path, verb: str, argv: list[str] | None = None) -> None:
        self.dir = logs_dir(state)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self.path = self.dir / f"{stamp}-{verb}.log"
        self.verb = verb
        self.args = " ".join(argv if argv is not None else sys.argv[1:])
        self.t0 = time.monotonic()
        self._fh: IO[str] | None = None
        self._closed = False

    @property
    def opened(self) -> bool:
        """Whether the file exists: it is created by the first event (a run that only
        looked at the hosts leaves no log)."""
        return self._fh is not None

    def _open(self) -> IO[str]:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.dir.chmod(0o700)
            _prune(self.dir)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self._fh = os.fdopen(fd, "w", encoding="utf-8", errors="replace")
            self._fh.write(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} homekube {self.verb}: "
                           f"{redact(self.args)}\n")
        return self._fh

    def write(self, text: str) -> None:
        if self._closed:
            return
        fh = self._open()
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        for line in redact(text).splitlines() or [""]:
            fh.write(f"{stamp} {line}\n")
        fh.flush()

    def event(self, ev: Event) -> None:
        where = f"{ev.host}: " if ev.host else ""
        if ev.kind == "phase":
            self.write(f"== {ev.text}")
        elif ev.kind == "start":
            self.write(f"{where}start: {ev.step}")
        elif ev.kind == "run":
            limit = f" (timeout {ev.timeout:g} s)" if ev.timeout else ""
            self.write(f"{where}  run: {ev.text}{limit}")
        elif ev.kind == "output":
            self.write(f"{where}  | {ev.text}")
        elif ev.kind == "done":
            self.write(f"{where}done: {ev.step} ({ev.seconds:.1f} s)")
        elif ev.kind == "fail":
            self.write(f"{where}FAILED: {ev.step}: {ev.text}")
        elif ev.kind == "retry":
            self.write(f"{where}retry: {ev.step}: {ev.text}")
        elif ev.kind == "bug":
            self.write(f"{where}BUG in phase {ev.phase}:\n{ev.text}")

    __call__ = event

    def close(self, outcome: str) -> None:
        if self._fh is not None and not self._closed:
            self.write(f"{outcome} after {time.monotonic() - self.t0:.1f} s")
            self._fh.close()
        self._closed = True

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if e is None:
            self.close("finished")
        elif isinstance(e, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close(f"failed: {e}")


def _prune(d: Path) -> None:
    logs = sorted(p for p in d.glob("*.log") if p.is_file())
    for p in logs[: max(0, len(logs) - (KEEP - 1))]:
        p.unlink(missing_ok=True)
