"""`homekube reset`: remove everything homekube installed, on one host or all of them."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

from homekube.components.base import Context
from homekube.components.etcd import check_removal_quorum
from homekube.components.reset import reset_steps
from homekube.config.model import ClusterConfig
from homekube.errors import HostError, RefusedError, UsageError
from homekube.etcd.shell import etcd_facts
from homekube.executor import Progress
from homekube.ops.session import open_session
from homekube.plan.model import PhasePlan, Plan


async def run_reset(cfg: ClusterConfig, console: Console, *, host: str | None, yes: bool,
                    keep_data: bool = False, progress: Progress | None = None,
                    confirm: Callable[[str], bool] | None = None,
                    show_plan: Callable[[Plan], None] | None = None) -> int:
    """Show what would be removed; remove it with `yes`, or when `confirm` (a question put
    to a person at a terminal) says so.

    `show_plan` prints the plan (the CLI passes its renderer: ops sit below the CLI)."""
    t0 = time.monotonic()
    targets = [h for h in cfg.hosts if host is None or h.name == host]
    if host is not None and not targets:
        raise UsageError(f"{host} is not a host in cluster.yaml")
    s = await open_session(cfg, lock=yes or confirm is not None, hosts=targets, enforce_preflight=False)
    try:
        if host is not None and targets[0].has("etcd") and len(cfg.etcd_hosts) > 1:
            ef = etcd_facts(s.facts[host])
            if ef.initialized:
                raise RefusedError(
                    f"{host} is an etcd member of a running cluster; resetting it alone would "
                    "leave a dead member behind",
                    hint=f"remove {host} from cluster.yaml and run apply (it removes the member, "
                    "quorum-checked, and cleans the host), or reset every host",
                )
        ctx = Context(cfg, s.facts, s.context().local, s.now)
        check_removal_quorum(ctx)
        steps = [st for h in targets for st in reset_steps(cfg, h, s.facts[h.name], purge_data=not keep_data)]
        plan = Plan(cfg.name, [h.name for h in targets], [PhasePlan("reset", "Reset", tuple(steps))])
        if show_plan is not None:
            show_plan(plan)
        if not plan.changes:
            console.print("nothing to reset")
            return 0
        if not (yes or (confirm is not None and confirm(
                f"Remove all of this from {len(targets)} host(s)?"))):
            console.print("nothing was changed: run again with --yes to reset")
            return 0
        result = await s.apply(plan, progress)
    finally:
        await s.close()
    if not result.ok:
        first = result.failed[0]
        raise HostError(str(first.message), host=first.host or "?", phase="reset")
    console.print(f"reset {len(result.applied)} host(s) in {time.monotonic() - t0:.2f}s")
    return 0
