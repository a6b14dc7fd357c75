"""Human output: plans per host with diffs, check results. Secrets never reach here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from homekube.plan.model import OP_OF_ACT, Change, NoChange, Plan, Run, WriteFile

if TYPE_CHECKING:
    from homekube.ops.session import Session


#: a change's symbol: + creates, ~ changes, - removes (like Terraform's plan)
SYMBOLS = {"create": ("+", "green"), "change": ("~", "yellow"), "remove": ("-", "red")}
_CREATE = ("create ", "install ", "add ", "issue ", "enable ", "start ")
_REMOVE = ("remove ", "delete ", "purge ", "uninstall ", "stop and remove ", "disable ", "wipe ")


def change_op(c: Change) -> str:
    """create, change or remove: what the Change does, for its symbol in the plan."""
    if c.op is not None:
        return c.op
    if c.key is not None and c.key.act in OP_OF_ACT:
        return OP_OF_ACT[c.key.act]
    # Changes without an identity yet: read the summary (display text, so only a guess)
    s = c.summary.lower()
    if s.startswith(_REMOVE) or " removed" in s:
        return "remove"
    if c.diff is not None and "@@ -0,0 " in c.diff:
        return "create"
    if s.startswith(_CREATE) and "(now " not in s:
        return "create"
    return "change"


def _cert_lines(c: Change) -> list[str]:
    """One line per distinct certificate a Change writes: subject, SANs, expiry (never PEM)."""
    from homekube.pki.spec import cert_info

    out: list[str] = []
    seen: set[bytes] = set()
    for a in c.actions:
        if isinstance(a, WriteFile) and not a.secret and a.content.startswith(b"-----BEGIN CERTIFICATE-----"):
            if a.content in seen:
                continue
            seen.add(a.content)
            try:
                info = cert_info(a.content)
            except ValueError:
                continue
            sans = [*info.dns_names, *info.ip_addresses]
            what = "CA " if info.is_ca else ""
            san = f"; SANs {', '.join(sans)}" if sans else ""
            out.append(f"{what}CN {info.subject_cn}, until {info.not_after:%Y-%m-%d}{san}")
    return out


def _changed_text_diff(c: Change) -> list[str]:
    """The unified diff of a text file that exists and changes (a created file is its line;
    a certificate its subject, SANs and expiry). The planner builds diffs from what may be
    shown: secrets are placeholders there."""
    if not c.diff or "@@ -0,0 " in c.diff or "BEGIN CERTIFICATE" in c.diff:
        return []
    return c.diff.rstrip("\n").splitlines()


def _line(console: Console, indent: int, text: Text) -> None:
    text.no_wrap = True
    text.overflow = "ellipsis"
    console.print(Text(" " * indent) + text, soft_wrap=False, overflow="ellipsis", no_wrap=True)


def print_plan(console: Console, plan: Plan, *, verbose: bool = False) -> None:
    """One line per change, grouped by phase and host; -v adds scripts, files and the unchanged.

    Default output folds commands to their description, shows certificates as subject,
    SANs and expiry, and a diff only for text files that exist and change.
    """
    for phase in plan.phases:
        steps = [s for s in phase.steps if isinstance(s, Change) or s.warning or verbose]
        if not steps:
            continue
        # the name is what --only takes
        _line(console, 0, Text(f"{phase.name}: ", style="bold cyan") + Text(phase.title, style="cyan"))
        for host in plan.hosts:
            mine = [s for s in steps if s.host == host]
            if not mine:
                continue
            _line(console, 2, Text(host, style="bold"))
            for st in mine:
                if isinstance(st, NoChange):
                    if st.warning:
                        _line(console, 4, Text("! ", style="magenta") + Text(st.reason))
                    else:
                        _line(console, 4, Text(f"= {st.reason}", style="dim"))
                    continue
                sym, style = SYMBOLS[change_op(st)]
                _line(console, 4, Text(f"{sym} ", style=style) + Text(st.summary)
                      + Text(f"  ({st.why})", style="dim"))
                for cert in _cert_lines(st):
                    _line(console, 8, Text(cert, style="dim"))
                if verbose:
                    _print_actions(console, st)
                else:
                    for d in _changed_text_diff(st):
                        dstyle = "green" if d.startswith("+") else "red" if d.startswith("-") else "dim"
                        _line(console, 8, Text(d, style=dstyle))
    n = len(plan.changes)
    by_op = {op: sum(1 for c in plan.changes if change_op(c) == op) for op in SYMBOLS}
    detail = ", ".join(f"{k} {SYMBOLS[k][0]}{v}" for k, v in by_op.items() if v)
    console.print(Text(f"{n} change{'s' if n != 1 else ''} on {len(plan.hosts)} host(s)"
                       + (f" ({detail})" if detail else ""), style="bold"))


def _print_actions(console: Console, c: Change) -> None:
    """-v: every action exactly; commands in full, files as diffs (secrets stay hidden)."""
    for a in c.actions:
        if isinstance(a, Run):
            if a.secret:
                console.print(Text(f"        run: {a.label()}  <command with secret material>", style="dim"))
                continue
            lines = a.command.strip("\n").splitlines() or [""]
            console.print(Text(f"        $ {lines[0]}", style="dim"), soft_wrap=True)
            for ln in lines[1:]:
                console.print(Text(f"          {ln}", style="dim"), soft_wrap=True)
        elif isinstance(a, WriteFile):
            console.print(Text(f"        {a.describe()}", style="dim"), soft_wrap=True)
        else:
            console.print(Text(f"        {a.describe()}", style="dim"), soft_wrap=True)
    # the planner builds diffs from what may be shown (secrets are placeholders there)
    for d in (c.diff or "").rstrip("\n").splitlines():
        dstyle = "green" if d.startswith("+") else "red" if d.startswith("-") else "dim"
        console.print(Text(f"        {d}", style=dstyle), soft_wrap=True)


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
