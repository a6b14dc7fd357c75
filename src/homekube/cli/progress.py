"""Live progress on stderr: what runs where, and for how long.

On a terminal it is a live panel (the phase, each host's current step with its elapsed time
and last output line) with finished steps printed above it; elsewhere (CI logs, pipes) it
is plain timestamped lines, plus a "still running" line every HEARTBEAT seconds for a step
that takes long. Results go to stdout, never here. `--quiet` silences it; NO_COLOR is
honoured by rich.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from homekube.executor import Event, same_words

#: seconds between "still running" lines without a terminal
HEARTBEAT = 30.0
#: without a terminal, a step is announced when it has run this long (quick ones only get
#: their ✓ line, which halves a CI log)
ANNOUNCE_AFTER = 2.0


def fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


@dataclass
class _HostState:
    step: str = ""
    command: str = ""
    since: float = 0.0
    last: str = ""
    beat: float = 0.0
    timeout: float | None = None
    announced: bool = False


class ProgressView:
    """Draws `Event`s (and lab log lines) on stderr; a context manager around a run."""

    def __init__(self, *, quiet: bool = False, stream: IO[str] | None = None,
                 live: bool | None = None, title: str = "") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live_mode = (not quiet) and (self.stream.isatty() if live is None else live)
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True,
                               force_terminal=self.live_mode or None)
        self.title = title
        self.phase = ""
        self.phase_since = time.monotonic()
        self.t0 = time.monotonic()
        self.hosts: dict[str, _HostState] = {}
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ProgressView:
        if not self.quiet and not self.live_mode:
            self._ticker = threading.Thread(target=self._tick, name="homekube-progress", daemon=True)
            self._ticker.start()
        return self

    def _start_live(self) -> None:
        """The panel appears with the first event (so lines printed before it, like warnings,
        are not drawn over) and goes with the last (so the result is printed after it)."""
        if self.live_mode and self._live is None and not self._stop.is_set():
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._stop_live()

    def pause(self) -> None:
        """Take the panel off the screen (e.g. for a question); the next event brings it back."""
        with self._lock:
            self._stop_live()

    # ------------------------------------------------------------------ output
    def _line(self, text: str, style: str = "") -> None:
        """One finished line: above the live panel, or timestamped."""
        if self.quiet:
            return
        with self._lock:
            if self.live_mode:
                self.console.print(Text(text, style=style))
            else:
                self.console.print(f"{datetime.now():%H:%M:%S} {text}", markup=False)

    def note(self, text: str) -> None:
        with self._lock:
            self._start_live()
        self._line(text)

    def event(self, ev: Event) -> None:
        if self.quiet:
            return
        with self._lock:
            if ev.kind == "end":
                self.hosts.clear()
                self._stop_live()
                return
            self._start_live()
            self._event(ev)

    __call__ = event

    def _event(self, ev: Event) -> None:
        now = time.monotonic()
        if ev.kind == "phase":
            self.phase, self.phase_since = ev.text, now
            self.hosts.clear()
            self._line(f"{ev.text}", "bold cyan")
        elif ev.kind == "start":
            self.hosts[ev.host] = _HostState(step=ev.step, since=now, beat=now)
        elif ev.kind == "run":
            st = self.hosts.setdefault(ev.host, _HostState(step=ev.step, since=now))
            st.command, st.timeout = ev.text, ev.timeout
        elif ev.kind == "output":
            st = self.hosts.setdefault(ev.host, _HostState(step=ev.step, since=now))
            st.last = ev.text
        elif ev.kind == "done":
            self.hosts.pop(ev.host, None)
            self._line(f"  ✓ {ev.host}: {ev.step} ({fmt_seconds(ev.seconds)})", "green")
        elif ev.kind == "fail":
            self.hosts.pop(ev.host, None)
            self._line(f"  ✗ {ev.host}: {ev.step}: {ev.text}", "red")
        elif ev.kind == "retry":
            self._line(f"  ↻ {ev.host}: {ev.step}: {ev.text}", "yellow")

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            with self._lock:
                for host, st in self.hosts.items():
                    if st.step and not st.announced and now - st.since >= ANNOUNCE_AFTER:
                        st.announced = True
                        self._line(f"{host}: {self._what(st)} ...")
                    elif st.step and now - st.beat >= HEARTBEAT:
                        st.beat = now
                        limit = f" of {fmt_seconds(st.timeout)}" if st.timeout else ""
                        self._line(f"{host}: still running: {self._what(st)} "
                                   f"({fmt_seconds(now - st.since)}{limit})")

    @staticmethod
    def _what(st: _HostState) -> str:
        """The step, and the command it runs when that says more."""
        if st.command and not same_words(st.command, st.step):
            return f"{st.step} [{st.command}]"
        return st.step

    # ------------------------------------------------------------------ the live panel
    def __rich__(self) -> RenderableType:
        now = time.monotonic()
        with self._lock:
            width = self.console.width
            head = Text.from_markup(
                f"[bold]{escape(self.phase or self.title or 'working')}[/] "
                f"[dim]{fmt_seconds(now - self.phase_since)}[/]")
            t = Table.grid(padding=(0, 1))
            t.add_column(no_wrap=True)
            t.add_column(overflow="ellipsis", no_wrap=True, max_width=max(20, width - 24))
            t.add_column(no_wrap=True, justify="right")
            for host, st in sorted(self.hosts.items()):
                what = self._what(st)
                limit = f"/{fmt_seconds(st.timeout)}" if st.timeout else ""
                t.add_row(Text(f"  {host}", style="bold"), Text(what),
                          Text(f"{fmt_seconds(now - st.since)}{limit}", style="dim"))
                if st.last:
                    t.add_row("", Text(st.last[: max(10, width - 12)], style="dim"), "")
            return Group(head, t)


class LabLogHandler(logging.Handler):
    """Sends the lab's log lines (`homekube.lab`) to a ProgressView."""

    def __init__(self, view: ProgressView) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.view.note(f"lab: {record.getMessage()}")
        except Exception:  # logging must never break a command
            self.handleError(record)
