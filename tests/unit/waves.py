"""Test helper: which wave (0 first) the executor runs each Change of a phase in."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from homekube.plan.model import Change, Step, waves


def wave_of(steps: Sequence[Step]) -> Callable[[Change], int]:
    """`wave_of(steps)(c)`: the wave of Change `c` among the Changes of `steps` (one phase)."""
    numbers = {id(c): i for i, w in enumerate(waves([s for s in steps if isinstance(s, Change)]))
               for c in w}
    return lambda c: numbers[id(c)]
