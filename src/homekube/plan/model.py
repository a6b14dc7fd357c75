"""What a run would do: Change / NoChange steps, grouped by phase, for every host.

A plan is the contract between `plan` and `apply`: `apply` executes the actions of exactly
the Changes shown, and nothing else. Actions are deliberately dumb (write a file, run a
shell command) so that the executor stays small and the planner, which is pure, carries all
the judgement.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from homekube.plan.order import Order, stage_of

#: what kind of remote work a Run is, for its default timeout (cluster.yaml `timeouts`)
StepKind = Literal["package", "kubeadm", "wait", "default"]


@dataclass(frozen=True)
class WriteFile:
    """Put `content` at `path` atomically (temp file + rename) with mode and owner."""

    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def describe(self) -> str:
        what = f"<private key, {self.mode:04o}>" if self.secret else f"{len(self.content)} bytes"
        return f"write {self.path} ({what}, {self.mode:04o} {self.owner}:{self.group})"


@dataclass(frozen=True)
class Run:
    """Run a shell command (bash, `set -euo pipefail`) on the host."""

    command: str
    description: str = ""
    #: hide the command text in plans and logs (it carries a token or key)
    secret: bool = False
    #: None: guessed from the command (see `kind_of`); sets the default timeout
    kind: StepKind | None = None
    #: seconds the step may take on the host before it is stopped (None: its kind's default)
    timeout: float | None = None

    def describe(self) -> str:
        if self.secret:
            return f"run: {self.description or '<command with secret material>'}"
        return f"run: {self.command}"

    def label(self) -> str:
        """A short name for progress lines and errors: the description, else the first line."""
        if self.description or self.secret:
            return self.description or "<command with secret material>"
        first = self.command.strip().splitlines()[0] if self.command.strip() else ""
        return first if len(first) <= 72 else first[:69] + "..."


_PACKAGE_RE = re.compile(r"\b(apt-get|apt|dnf|yum|zypper)\s+(-\S+\s+)*(update|install|upgrade|purge|remove)"
                         r"|\b(curl|wget)\b")
_KUBEADM_RE = re.compile(r"\bkubeadm\s+(init|join|upgrade|reset)\b")
_WAIT_RE = re.compile(r"\bkubectl\b.*\b(wait|rollout\s+status)\b|\buntil\b")


def kind_of(run: Run) -> StepKind:
    """The kind of a Run: given, or guessed from its command (package managers and downloads,
    kubeadm's long verbs, waits); guessing keeps every planner's steps bounded without each
    one having to say so."""
    if run.kind is not None:
        return run.kind
    if _KUBEADM_RE.search(run.command):
        return "kubeadm"
    if _PACKAGE_RE.search(run.command):
        return "package"
    if run.description.lower().startswith("wait") or _WAIT_RE.search(run.command):
        return "wait"
    return "default"


@dataclass(frozen=True)
class LocalWrite:
    """Write a file on the operator machine (state dir), e.g. a backup or the CA."""

    path: str
    content: bytes
    mode: int = 0o600
    secret: bool = True

    def describe(self) -> str:
        return f"write locally {self.path} ({self.mode:04o})"


Action = WriteFile | Run | LocalWrite


class Act(StrEnum):
    """What a Change does to its resource."""

    CREATE = "create"
    UPDATE = "update"
    INSTALL = "install"
    ISSUE = "issue"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RESTORE = "restore"
    REPLACE = "replace"
    VERIFY = "verify"


Op = Literal["create", "change", "remove"]

#: the plan symbol (+ ~ -) each act stands for; INSTALL is not here because one key covers
#: both a first install and an upgrade (etcd's binaries), which only the summary tells apart
OP_OF_ACT: dict[Act, Op] = {
    Act.CREATE: "create", Act.ISSUE: "create", Act.START: "create",
    Act.UPDATE: "change", Act.RESTART: "change", Act.RESTORE: "change", Act.REPLACE: "change",
    Act.VERIFY: "change", Act.STOP: "change",
}


@dataclass(frozen=True)
class ChangeKey:
    """A Change's identity for code: resource kind and name, and what is done to it.

    Code that picks Changes out of a plan (`certs renew`, `restore`, a planner looking at
    its own earlier steps) matches on this, so the display text (`resource`, `summary`,
    `why`) can be reworded freely.
    """

    kind: str
    name: str
    act: Act
    #: what made the action necessary, where callers tell causes apart (a restart for
    #: new certificates only, versus one for a changed config)
    causes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Change:
    """One thing that will be changed, where, and why."""

    host: str
    phase: str
    resource: str
    summary: str
    why: str
    actions: tuple[Action, ...]
    diff: str | None = None
    #: where it runs in its phase's declared stages (see homekube.plan.order); None: a
    #: phase whose Changes all run together (hosts in parallel, each in plan order)
    order: Order | None = None
    #: for the plan's symbol (+ ~ -); None: from `key`'s act, else guessed from the summary
    op: Op | None = None
    #: identity that code matches on; None for Changes nothing selects by identity yet
    key: ChangeKey | None = None

    kind: Literal["change"] = "change"

    def to_json(self, wave: int | None = None) -> dict[str, Any]:
        """`wave`: its place among the phase's waves (0 first), as `Plan.to_json` counts it."""
        return {
            "host": self.host,
            "phase": self.phase,
            "resource": self.resource,
            "summary": self.summary,
            "why": self.why,
            "wave": wave or 0,
            **({"stage": str(self.order)} if self.order is not None else {}),
            "actions": [a.describe() for a in self.actions],
            **({"diff": self.diff} if self.diff is not None else {}),
        }


@dataclass(frozen=True)
class NoChange:
    """Nothing to do for a resource, and why not (or a warning that it cannot be done)."""

    host: str
    phase: str
    resource: str
    reason: str
    warning: bool = False

    kind: Literal["nochange"] = "nochange"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "phase": self.phase,
            "resource": self.resource,
            "reason": self.reason,
            "warning": self.warning,
        }


Step = Change | NoChange


def _key(c: Change) -> tuple[int, ...]:
    return () if c.order is None else c.order.key()


def waves(changes: Sequence[Change]) -> list[list[Change]]:
    """The Changes of one phase as the waves the executor runs, first wave first.

    Each wave keeps the Changes' plan order (a host runs its part of a wave in that order).
    Raises ValueError on an ordering that is a planner's bug: tagged and untagged Changes
    mixed, stages of another phase's declaration, a one-at-a-time stage without a turn.
    """
    tagged = {c.order is not None for c in changes}
    if len(tagged) > 1:
        untagged = next(c for c in changes if c.order is None)
        raise ValueError(f"{untagged.phase}: {untagged.host}: {untagged.summary!r} has no stage "
                         "while other Changes of the phase have one")
    stages = [stage_of(c.order) for c in changes if c.order is not None]
    loose = [s.name for s in stages if s.rank < 0]
    if loose:
        raise ValueError(f"stage {loose[0]!r} was not declared: give it to `declare` with the "
                         "phase's other stages")
    if len({s.phase for s in stages}) > 1:
        raise ValueError("the stages of one phase must come from one `declare`, not from "
                         f"{sorted({s.phase for s in stages})}")
    by_key: dict[tuple[int, ...], list[Change]] = {}
    for c in changes:
        by_key.setdefault(_key(c), []).append(c)
    return [by_key[k] for k in sorted(by_key)]


@dataclass(frozen=True)
class PhasePlan:
    name: str
    title: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        # a bad ordering is a planner's bug: fail while planning, not halfway through apply
        waves(self.changes)

    @property
    def changes(self) -> list[Change]:
        return [s for s in self.steps if isinstance(s, Change)]

    @property
    def waves(self) -> list[list[Change]]:
        return waves(self.changes)

    def wave_numbers(self) -> dict[int, int]:
        """Each Change's wave (0 first), keyed by `id()` of the Change."""
        return {id(c): i for i, w in enumerate(self.waves) for c in w}


@dataclass
class Plan:
    cluster: str
    hosts: list[str]
    phases: list[PhasePlan] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        return [c for p in self.phases for c in p.changes]

    @property
    def warnings(self) -> list[NoChange]:
        return [s for p in self.phases for s in p.steps if isinstance(s, NoChange) and s.warning]

    def for_host(self, host: str) -> list[tuple[str, list[Step]]]:
        return [(p.name, [s for s in p.steps if s.host == host]) for p in self.phases]

    def to_json(self) -> dict[str, Any]:
        per_host: dict[str, dict[str, Any]] = {}
        wave: dict[int, int] = {}
        for p in self.phases:
            wave.update(p.wave_numbers())
        for h in self.hosts:
            steps = [s for p in self.phases for s in p.steps if s.host == h]
            per_host[h] = {
                "changes": [s.to_json(wave[id(s)]) for s in steps if isinstance(s, Change)],
                "unchanged": [s.to_json() for s in steps if isinstance(s, NoChange)],
            }
        return {
            "cluster": self.cluster,
            "changes": len(self.changes),
            "warnings": [w.to_json() for w in self.warnings],
            "phases": [p.name for p in self.phases],
            "hosts": per_host,
        }
