"""`homekube apply`: plan, execute exactly that plan, report."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape

from homekube.components.base import Context
from homekube.components.etcd import check_removal_quorum
from homekube.components.registry import all_phases
from homekube.config.model import ClusterConfig
from homekube.errors import ConnectError
from homekube.executor import Progress
from homekube.ops.session import close_all, connect_some, gather_facts, open_session, read_local_state, write_inventory


async def run_apply(
    cfg: ClusterConfig,
    console: Console,
    *,
    phases: set[str] | None = None,
    progress: Progress | None = None,
    err: Console | None = None,
    t0: float | None = None,
) -> int:
    """Converge; progress goes to `progress`, warnings to `err`, the result to `console`."""
    t0 = t0 if t0 is not None else time.monotonic()
    err = err if err is not None else Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        s = await open_session(cfg, lock=True)
    except ConnectError:
        # An unreachable host stops the run; but if this apply would also remove an etcd
        # member, the more important news is that it would lose quorum: say that.
        await refuse_unsafe_removal(cfg)
        raise
    try:
        for host, note in s.notices:
            err.print(f"[magenta]![/] {escape(host)}: {escape(note)}")
        for name, why in s.unreachable_removed.items():
            err.print(f"[magenta]![/] {escape(name)} was removed from cluster.yaml but cannot be "
                      f"reached ({escape(why)}): its cleanup is skipped")
        plan = s.plan(phases)
        changes = plan.changes
        for w in plan.warnings:
            err.print(f"[magenta]![/] {escape(w.host)}: {escape(w.reason)}")
        if not changes:
            if phases is None:
                write_inventory(cfg)
            console.print(f"nothing to change on {len(plan.hosts)} host(s) "
                          f"({time.monotonic() - t0:.2f}s)")
            return 0
        result = await s.apply(plan, progress)
    finally:
        await s.close()
    if not result.ok:
        # every failure but the last is printed; the last one is the error itself (with the
        # step's last output lines), followed by the hint and the log's path
        for e in result.failed[:-1]:
            err.print(f"error: {e}", markup=False, soft_wrap=True)
        last = result.failed[-1]
        others = "the other hosts finished their part of that step" if len(plan.hosts) > 1 else ""
        last.hint = (f"{len(result.applied)} change(s) were applied before that"
                     f"{'; ' + others if others else ''}. Fix the cause and run apply again: it "
                     "continues from where it stopped.")
        raise last
    if phases is None:
        write_inventory(cfg)
    console.print(f"applied {len(result.applied)} change(s) on {len(plan.hosts)} host(s) "
                  f"in {time.monotonic() - t0:.2f}s")
    return 0


async def refuse_unsafe_removal(cfg: ClusterConfig) -> None:
    """Raise RefusedError when the config removes etcd members that quorum cannot spare."""
    ts, unreachable = await connect_some(cfg, cfg.hosts)
    try:
        hosts = [h for h in cfg.hosts if h.name in ts]
        facts = await gather_facts(cfg, hosts, ts, all_phases())
    finally:
        await close_all(ts)
    from datetime import UTC, datetime

    ctx = Context(cfg, facts, read_local_state(cfg), datetime.now(UTC))
    check_removal_quorum(ctx, unreachable=set(unreachable))
