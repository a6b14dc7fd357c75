"""Run a plan: phases in order, waves in order, hosts in parallel within a wave.

The waves come from the stages each phase declares (homekube.plan.order, mapped by
`PhasePlan.waves`).

The executor makes no decisions: it runs the actions of exactly the Changes it is given.
Progress goes to an optional callback as `Event`s, streamed while a host's script runs (the
script prints a marker as each step starts), so the CLI can draw it without the executor
knowing about terminals.

Every command runs under a timeout enforced on the host (plan.script); the operator keeps a
deadline of its own a little beyond the sum of them, for a host that stops answering. A
package-manager step that failed on a network error is tried once more.

Only homekube's own errors and the operator's I/O (OSError: a lost connection, a timeout, a
local file that cannot be written) become a host's failure. Anything else is a bug: the
other hosts still finish the wave, then the bug is raised as it is, its traceback in the run
log (a `bug` event) and in the debug log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from homekube.errors import HomekubeError, HostError
from homekube.plan.model import Change, LocalWrite, Plan, Run, kind_of
from homekube.plan.script import KILL_GRACE, parse_mark, render
from homekube.transport.base import TIMED_OUT, Transport

EventKind = Literal["phase", "start", "run", "output", "done", "fail", "retry", "bug", "end"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Something that happened during a run; `text` depends on the kind.

    phase: `text` is the phase title. start: a Change (`step`) began on `host`. run: one of
    its commands began (`text` its label, `timeout` its limit). output: a line it printed.
    done: the Change finished (`seconds`). fail: it failed (`text` the error). retry: it is
    tried again (`text` why). bug: an unexpected exception on `host` (`text` its traceback;
    a `fail` event says it in one line). end: the plan's run is over (what follows is its
    result).
    """

    kind: EventKind
    host: str = ""
    phase: str = ""
    step: str = ""
    text: str = ""
    seconds: float = 0.0
    timeout: float | None = None


Progress = Callable[[Event], None]

#: default seconds per kind of step when no config says otherwise
DEFAULT_TIMEOUTS: dict[str, float] = {"package": 900, "kubeadm": 1200, "wait": 900, "default": 300}
#: output of apt, dnf and curl that means the network failed, not the request
NETWORK_ERROR = re.compile(
    r"Temporary failure resolving|Could not resolve|Failed to fetch|Connection failed|"
    r"Connection timed out|Unable to connect|Could not connect|Network is unreachable|"
    r"Connection refused|Cannot download|Curl error|Failed to download|Connection reset|"
    r"curl: \((6|7|28|35|52|56)\)", re.IGNORECASE)
APT_LOCK = re.compile(r"Could not get lock \S+\.? It is held by process (\d+) \(([^)]*)\)")
#: lines of a failed step's output kept for its error message
TAIL = 15


@dataclass
class ApplyResult:
    applied: list[Change] = field(default_factory=list)
    failed: list[HostError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def write_local(a: LocalWrite) -> None:
    """Atomically write an operator-side file created with its final mode from the start."""
    p = Path(os.path.expanduser(a.path))
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".homekube.")
    try:
        os.fchmod(fd, a.mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(a.content)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class _Tracker:
    """Follows one host's script through its marker lines."""

    host: str
    changes: list[Change]
    progress: Progress | None
    current: int | None = None
    action: int | None = None
    started: float = 0.0
    timed_out: tuple[int, int, int] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL))
    finished: list[int] = field(default_factory=list)

    def _emit(self, ev: Event) -> None:
        if self.progress is not None:
            self.progress(ev)

    def _close_current(self) -> None:
        if self.current is not None:
            c = self.changes[self.current]
            self.finished.append(self.current)
            self._emit(Event("done", self.host, c.phase, c.summary, seconds=time.monotonic() - self.started))
            self.current = None

    def line(self, text: str) -> None:
        m = parse_mark(text)
        if m is None:
            self.tail.append(text)
            if self.current is not None:
                c = self.changes[self.current]
                self._emit(Event("output", self.host, c.phase, c.summary, text))
            return
        if m.kind == "change" and m.change < len(self.changes):
            self._close_current()
            self.current, self.action, self.started = m.change, None, time.monotonic()
            self.tail.clear()
            c = self.changes[m.change]
            self._emit(Event("start", self.host, c.phase, c.summary))
        elif m.kind == "run" and self.current is not None:
            self.action = m.action
            c = self.changes[self.current]
            a = c.actions[m.action] if m.action < len(c.actions) else None
            label = a.label() if isinstance(a, Run) else ""
            self._emit(Event("run", self.host, c.phase, c.summary, label, timeout=float(m.seconds)))
        elif m.kind == "timeout":
            self.timed_out = (m.change, m.action, m.seconds)
        elif m.kind == "done":
            self._close_current()


def _run_of(c: Change, action: int | None) -> Run | None:
    if action is not None and action < len(c.actions):
        a = c.actions[action]
        return a if isinstance(a, Run) else None
    return None


async def _run_host(t: Transport, changes: list[Change], progress: Progress | None,
                    timeouts: Mapping[str, float]) -> list[Change]:
    for c in changes:
        for a in c.actions:
            if isinstance(a, LocalWrite):
                write_local(a)
    remote = [c for c in changes if any(not isinstance(a, LocalWrite) for a in c.actions)]
    if not remote:
        return changes

    def timeout_of(r: Run) -> float:
        return r.timeout if r.timeout is not None else timeouts.get(kind_of(r), DEFAULT_TIMEOUTS[kind_of(r)])

    retried = False
    todo = remote
    while True:
        tr = _Tracker(t.host, todo, progress)
        script = render(todo, timeout_of)
        runs = [a for c in todo for a in c.actions if isinstance(a, Run)]
        # the host enforces each step's limit; this only catches a host that stops answering
        deadline = sum(timeout_of(r) + KILL_GRACE for r in runs) + 120 + len(script) / 50_000
        res = await t.run(script, timeout=deadline, on_line=tr.line)
        if res.ok:
            return changes
        idx = tr.current if tr.current is not None else (max(tr.finished) + 1 if tr.finished else 0)
        idx = min(idx, len(todo) - 1)
        step = todo[idx]
        run = _run_of(step, tr.action)
        out = "\n".join(tr.tail)
        if res.stderr.strip():
            out = (out + "\n" + res.stderr.strip()).strip()
        if (run is not None and not retried and tr.timed_out is None and res.exit_status != TIMED_OUT
                and kind_of(run) == "package" and NETWORK_ERROR.search(out)):
            retried = True
            if progress is not None:
                progress(Event("retry", t.host, step.phase, step.summary,
                               "a network error; trying once more"))
            todo = todo[idx:]
            continue
        raise _failure(t.host, step, run, res.exit_status, out, tr, progress)


def same_words(a: str, b: str) -> bool:
    """`install a, b` and `install a b` say the same: a command label adds nothing then."""
    return a.replace(",", "").split() == b.replace(",", "").split()


def _failure(host: str, step: Change, run: Run | None, status: int, out: str, tr: _Tracker,
             progress: Progress | None) -> HostError:
    label = f" ({run.label()})" if run is not None and not same_words(run.label(), step.summary) else ""
    if tr.timed_out is not None and run is not None:
        kind = kind_of(run)
        how = "its own limit" if run.timeout is not None else f"timeouts.{kind} in cluster.yaml"
        msg = (f"timed out after {tr.timed_out[2]} s{label}; the step was stopped on the host "
               f"({how}, or --step-timeout)")
    elif status == TIMED_OUT:
        msg = "the host stopped answering; the script was stopped there"
    else:
        msg = f"failed (exit {status}){label}"
    hint = None
    held = APT_LOCK.search(out)
    if held:
        # homekube's own steps never leave one behind (see transport.base.watched): this is
        # another package manager, e.g. unattended-upgrades right after boot
        hint = (f"another package manager runs on {host} (process {held.group(1)}, {held.group(2)}); "
                "wait for it to finish and run again")
    err = HostError(msg, host=host, phase=step.phase, step=step.summary, output=out, hint=hint)
    if progress is not None:
        progress(Event("fail", host, step.phase, step.summary, msg))
    return err


async def execute(
    plan: Plan,
    transports: dict[str, Transport],
    *,
    progress: Progress | None = None,
    timeouts: Mapping[str, float] | None = None,
) -> ApplyResult:
    """Run every Change of `plan`; stop after the first wave in which any host failed.

    Hosts that did not fail in that wave finish their work, so the cluster is left in a
    consistent, re-plannable state; a rerun converges from there.
    """
    try:
        return await _execute(plan, transports, progress,
                              timeouts if timeouts is not None else DEFAULT_TIMEOUTS)
    finally:
        if progress is not None:
            progress(Event("end"))


async def _execute(plan: Plan, transports: dict[str, Transport], progress: Progress | None,
                   limits: Mapping[str, float]) -> ApplyResult:
    result = ApplyResult()
    for phase in plan.phases:
        waves = phase.waves
        if not waves:
            continue
        if progress:
            progress(Event("phase", phase=phase.name, text=phase.title))
        for wave in waves:
            by_host: dict[str, list[Change]] = {}
            for c in wave:
                by_host.setdefault(c.host, []).append(c)
            hosts = list(by_host)
            # every host finishes its part of the wave, whatever happens to the others
            outcomes = await asyncio.gather(
                *(_run_host(transports[h], by_host[h], progress, limits) for h in hosts),
                return_exceptions=True,
            )
            bugs: list[BaseException] = []
            for h, out in zip(hosts, outcomes, strict=True):
                if isinstance(out, list):
                    result.applied.extend(out)
                elif (err := _host_error(h, phase.name, out)) is not None:
                    result.failed.append(err)
                elif not isinstance(out, Exception):
                    raise out  # cancelled, interrupted: nothing to report per host
                else:
                    _report_bug(h, phase.name, out, progress)
                    bugs.append(out)
            if bugs:
                raise _with_notes(bugs, result)
            if result.failed:
                return result
    return result


def _host_error(host: str, phase: str, e: BaseException) -> HostError | None:
    """The host's failure for one of homekube's errors or an I/O error; None for a bug."""
    if isinstance(e, HostError):
        return e
    if isinstance(e, HomekubeError):
        return HostError(e.message, host=e.host or host, phase=phase, hint=e.hint)
    if isinstance(e, OSError):  # a lost connection, a timeout, a local file (TimeoutError too)
        return HostError(str(e) or type(e).__name__, host=host, phase=phase)
    return None


def _report_bug(host: str, phase: str, e: BaseException, progress: Progress | None) -> None:
    tb = "".join(traceback.format_exception(e)).rstrip()
    log.debug("bug while running phase %s on %s", phase, host, exc_info=e)
    if progress is not None:
        progress(Event("fail", host, phase, text=f"internal error (a bug): {type(e).__name__}: {e}"))
        progress(Event("bug", host, phase, text=tb))


def _with_notes(bugs: list[BaseException], result: ApplyResult) -> BaseException:
    """The first bug, noting the others and what the rest of the wave did."""
    first = bugs[0]
    for other in bugs[1:]:
        first.add_note(f"also: {type(other).__name__}: {other} (traceback in the run log)")
    for err in result.failed:
        first.add_note(f"also failed: {err}")
    if result.applied:
        hosts = sorted({c.host for c in result.applied})
        first.add_note(f"finished before the bug stopped the run: {len(result.applied)} "
                       f"change(s) on {', '.join(hosts)}")
    return first
