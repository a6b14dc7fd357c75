"""Build a Plan from phases and a Context (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from homekube.components.base import Context, Phase
from homekube.plan.model import PhasePlan, Plan


def build_plan(phases: Sequence[Phase], ctx: Context, only: set[str] | None = None) -> Plan:
    plan = Plan(cluster=ctx.config.name,
                hosts=[h.name for h in ctx.hosts()] + [h.name for h in ctx.removed])
    for ph in phases:
        if only is not None and ph.name not in only:
            continue
        plan.phases.append(PhasePlan(ph.name, ph.title, tuple(ph.plan(ctx))))
    return plan
