"""Run a plan: phases in order, waves in order, hosts in parallel within a wave.

The executor makes no decisions: it runs the actions of exactly the Changes it is given.
Progress goes to an optional callback so the CLI can draw it without the executor knowing
about terminals.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from homekube.errors import HostError
from homekube.plan.model import Change, LocalWrite, Plan
from homekube.plan.script import failed_step, render, strip_marks
from homekube.transport.base import Transport

Progress = Callable[[str, str, str], None]  # (event, host, text)


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


async def _run_host(t: Transport, changes: list[Change], progress: Progress | None) -> list[Change]:
    for c in changes:
        for a in c.actions:
            if isinstance(a, LocalWrite):
                write_local(a)
    remote = [c for c in changes if any(not isinstance(a, LocalWrite) for a in c.actions)]
    if not remote:
        return changes
    if progress:
        for c in remote:
            progress("start", t.host, c.summary)
    res = await t.run(render(remote), timeout=1800)
    if not res.ok:
        idx = failed_step(res.stdout)
        step = remote[idx] if idx is not None and idx < len(remote) else remote[-1]
        out = (strip_marks(res.stdout) + "\n" + res.stderr).strip()
        raise HostError(
            f"failed (exit {res.exit_status})", host=t.host, phase=step.phase,
            step=step.summary, output=out,
        )
    if progress:
        for c in remote:
            progress("done", t.host, c.summary)
    return changes


async def execute(
    plan: Plan,
    transports: dict[str, Transport],
    *,
    progress: Progress | None = None,
) -> ApplyResult:
    """Run every Change of `plan`; stop after the first wave in which any host failed.

    Hosts that did not fail in that wave finish their work, so the cluster is left in a
    consistent, re-plannable state; a rerun converges from there.
    """
    result = ApplyResult()
    for phase in plan.phases:
        changes = phase.changes
        if not changes:
            continue
        if progress:
            progress("phase", "", phase.title)
        for wave in sorted({c.wave for c in changes}):
            by_host: dict[str, list[Change]] = {}
            for c in changes:
                if c.wave == wave:
                    by_host.setdefault(c.host, []).append(c)
            hosts = list(by_host)
            outcomes = await asyncio.gather(
                *(_run_host(transports[h], by_host[h], progress) for h in hosts),
                return_exceptions=True,
            )
            for h, out in zip(hosts, outcomes, strict=True):
                if isinstance(out, HostError):
                    result.failed.append(out)
                elif isinstance(out, BaseException):
                    result.failed.append(HostError(str(out) or type(out).__name__, host=h,
                                                   phase=phase.name))
                else:
                    result.applied.extend(out)
            if result.failed:
                return result
    return result
