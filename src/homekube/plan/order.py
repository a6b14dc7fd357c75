"""The order of a phase's Changes: named stages, declared once per phase, instead of numbers.

A phase declares its stages in the order they run; a planner tags each Change with its stage,
or with its turn in a one-at-a-time stage. :func:`homekube.plan.model.waves` turns the tags
into the executor's waves: a wave finishes on every host before the next one starts, hosts
run in parallel within a wave, and one host's Changes in a wave run in plan order. ::

    INIT, TOKEN, CP_JOIN, WORKER_JOIN = declare(
        "kubeadm",
        parallel("init"),
        parallel("token"),
        one_at_a_time("control-plane join"),
        parallel("worker join"))

    Change(..., order=INIT)                       # together with the rest of the stage
    Change(..., order=CP_JOIN.turn(i))            # the i-th one, after the (i-1)-th
    Change(..., order=NODES.turn(i, "drain"))     # a named step of the i-th turn

"After stage X" is the declaration itself: a stage runs after every stage declared before
it. A one-at-a-time stage may name steps that each turn goes through in order (drain on one
host, then the kubelet on another, then uncordon); a step is a wave of its own because the
hosts differ and must not overlap. Turn numbers only say which comes first: gaps are fine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Stage:
    """A named part of one phase's order; every Change in it runs after the earlier stages."""

    name: str
    #: its Changes run one turn after another (see `turn`) instead of all together
    one_at_a_time: bool = False
    #: named steps of every turn, in order (one-at-a-time stages only)
    steps: tuple[str, ...] = ()
    #: set by `declare`: the phase whose order this belongs to, and its place there
    phase: str = ""
    rank: int = -1

    def turn(self, index: int, step: str | None = None) -> Turn:
        """The `index`-th turn of a one-at-a-time stage (at `step`, when it names steps)."""
        if not self.one_at_a_time:
            raise ValueError(f"stage {self.name!r} runs all at once: it has no turns")
        if (step is None) != (not self.steps) or (step is not None and step not in self.steps):
            raise ValueError(f"stage {self.name!r} has steps {self.steps}, not {step!r}")
        return Turn(self, index, step)

    def key(self) -> tuple[int, int, int]:
        if self.one_at_a_time:
            raise ValueError(f"stage {self.name!r} runs one at a time: give a Change its turn")
        return (self.rank, 0, 0)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Turn:
    """One turn of a one-at-a-time stage, at one of its steps when the stage names them."""

    stage: Stage
    index: int
    step: str | None = None

    def key(self) -> tuple[int, int, int]:
        step = self.stage.steps.index(self.step) if self.step is not None else 0
        return (self.stage.rank, self.index, step)

    def __str__(self) -> str:
        step = f" ({self.step})" if self.step is not None else ""
        return f"{self.stage.name} #{self.index + 1}{step}"


#: where a Change runs in its phase's order
Order = Stage | Turn


def parallel(name: str) -> Stage:
    """A stage whose Changes all run in one wave, hosts in parallel."""
    return Stage(name)


def one_at_a_time(name: str, *steps: str) -> Stage:
    """A stage that runs turn by turn (a host, a member, a node); each turn goes through
    `steps` in order, each step finished before the next starts."""
    return Stage(name, one_at_a_time=True, steps=steps)


def declare(phase: str, *stages: Stage) -> tuple[Stage, ...]:
    """The stages of `phase` in the order they run, ready to tag Changes with."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"phase {phase!r} declares a stage twice: {names}")
    return tuple(replace(s, phase=phase, rank=i) for i, s in enumerate(stages))


def stage_of(order: Order) -> Stage:
    return order if isinstance(order, Stage) else order.stage
