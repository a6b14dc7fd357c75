"""Human output: plans per host with diffs, check results. Secrets never reach here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from homekube.plan.model import Change, NoChange, Plan

if TYPE_CHECKING:
    from homekube.ops.session import Session


def print_plan(console: Console, plan: Plan, *, verbose: bool = False) -> None:
    n = len(plan.changes)
    for host in plan.hosts:
        per = plan.for_host(host)
        count = sum(1 for _, steps in per for s in steps if isinstance(s, Change))
        console.print(f"[bold]{escape(host)}[/]: {count} change{'s' if count != 1 else ''}")
        for phase, steps in per:
            changes = [s for s in steps if isinstance(s, Change)]
            warns = [s for s in steps if isinstance(s, NoChange) and s.warning]
            quiet = [s for s in steps if isinstance(s, NoChange) and not s.warning]
            if not changes and not warns and not verbose:
                continue
            console.print(f"  [cyan]{escape(phase)}[/]")
            for c in changes:
                console.print(f"    [yellow]~[/] {escape(c.summary)}  [dim]({escape(c.why)})[/]")
                for a in c.actions:
                    console.print(f"        [dim]{escape(a.describe())}[/]")
                if c.diff:
                    for line in c.diff.rstrip("\n").splitlines():
                        style = "green" if line.startswith("+") else "red" if line.startswith("-") else "dim"
                        console.print(f"        [{style}]{escape(line)}[/]")
            for w in warns:
                console.print(f"    [magenta]![/] {escape(w.reason)}")
            if verbose:
                for q in quiet:
                    console.print(f"    [dim]= {escape(q.reason)}[/]")
    console.print(f"[bold]{n} change{'s' if n != 1 else ''}[/] on {len(plan.hosts)} host(s)")


def print_check(console: Console, s: Session) -> int:
    t = Table("host", "os", "cpu", "ram", "cgroup", "result", box=None)
    bad = 0
    for h in s.config.hosts:
        f = s.facts[h.name]
        found = [x for x in s.findings if x.host == h.name]
        fatal = [x for x in found if x.fatal]
        bad += len(fatal)
        res = "ok" if not found else "; ".join(("✗ " if x.fatal else "! ") + x.message for x in found)
        t.add_row(h.name, f.os.pretty, str(f.cpus), f"{f.memory.total / 1024**3:.1f} GiB",
                  f"v{f.cgroup}", escape(res))
    console.print(t)
    if bad:
        console.print(f"preflight refused: {bad} problem(s)")
        return 3
    console.print("all hosts pass preflight")
    return 0
