"""Membership rules as pure functions: who is joining or leaving, quorum, version gates.

Inputs are plain data (member lists, host names, peer URLs, versions); the planners read them
from facts and config and turn the answers into Changes or refusals.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from homekube.etcd.api import EtcdMember


@dataclass(frozen=True)
class Membership:
    live: list[EtcdMember] | None  # None: no member answered
    source: str | None  # host the member list came from
    fresh: bool  # no member has data and none runs: bootstrap all together


def read_membership(lists: Sequence[tuple[str, list[EtcdMember] | None]], wanted: Collection[str],
                    initialized: bool) -> Membership:
    """Pick the member list to trust from what each host's member said, in config order.

    A desired etcd host is preferred as the one we talk to (a member being removed may still
    answer, but the steps that follow should run elsewhere).
    """
    best: tuple[str, list[EtcdMember]] | None = None
    for name, ms in lists:
        if ms and (best is None or (name in wanted and best[0] not in wanted)):
            best = (name, ms)
    if best is None:
        return Membership(None, None, fresh=not initialized)
    return Membership(best[1], best[0], fresh=False)


def pending_join(x: EtcdMember, wanted_peers: Collection[str]) -> bool:
    """An added member that never started (no name yet) whose peer URL is a wanted host's."""
    return not x.name and bool(x.peer_urls) and x.peer_urls[0] in wanted_peers


def joining(wanted: Sequence[str], live: list[EtcdMember] | None) -> list[str]:
    """Wanted members the cluster does not list yet, in config order (one joins at a time)."""
    if live is None:
        return []
    names = {x.name for x in live}
    return [n for n in wanted if n not in names]


def leaving(live: list[EtcdMember] | None, wanted: Collection[str],
            wanted_peers: Collection[str]) -> list[EtcdMember]:
    """Members that no wanted host is, nor is about to become."""
    return [x for x in live or [] if x.name not in wanted and not pending_join(x, wanted_peers)]


def current_peers(live: list[EtcdMember] | None, wanted_peers: Collection[str]) -> list[tuple[str, str]]:
    """(name, peer URL) of the started members: the cluster a joining member starts into."""
    return [(x.name, x.peer_urls[0] if x.peer_urls else "") for x in live or []
            if not pending_join(x, wanted_peers)]


def leftover_learners(live: list[EtcdMember] | None, wanted: Collection[str]) -> list[str]:
    """Learners from an interrupted growth that still need promoting."""
    return [x.name for x in live or [] if x.learner and x.name in wanted]


@dataclass(frozen=True)
class Removal:
    member: EtcdMember
    healthy: int  # healthy voters left after it goes
    remaining: int  # voters left after it goes
    down: tuple[str, ...]  # remaining voters that are down or unreachable

    @property
    def need(self) -> int:
        return self.remaining // 2 + 1

    @property
    def keeps_quorum(self) -> bool:
        return self.member.learner or (self.remaining > 0 and self.healthy >= self.need)


def removals(live: list[EtcdMember], leaving_: Sequence[EtcdMember],
             healthy: Collection[str]) -> list[Removal]:
    """Remove `leaving_` one at a time: what each removal leaves behind."""
    voters = [x for x in live if not x.learner]
    out = []
    for x in leaving_:
        remaining = [v for v in voters if v.name != x.name]
        ok = [v for v in remaining if v.name in healthy]
        down = tuple(sorted(v.name for v in remaining if v.name not in healthy))
        out.append(Removal(x, len(ok), len(remaining), down))
        voters = remaining
    return out


def removal_refusal(r: Removal) -> str:
    why = ""
    if r.down:
        why = f" ({', '.join(r.down)} {'is' if len(r.down) == 1 else 'are'} down or unreachable)"
    return (f"refusing to remove etcd member {r.member.name}: it would leave {r.healthy} healthy "
            f"of {r.remaining} members{why}; etcd needs {r.need} for quorum. Nothing was changed.")


def _ver(v: str) -> tuple[int, int, int] | None:
    parts = v.strip().lstrip("v").split("-")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else 0)
    except (ValueError, IndexError):
        return None


#: the lowest patch of a minor from which the next minor may be reached (facts.md §3.2)
UPGRADE_FLOOR: dict[tuple[int, int], tuple[int, int, int]] = {
    (3, 5): (3, 5, 24),  # 3.5 → 3.6: the learner bug fixes of 3.5.20 / 3.5.24 first
    (3, 6): (3, 6, 11),  # 3.6 → 3.7: every member on ≥ 3.6.11
}


def version_gate(current: str, target: str) -> str | None:
    """Why `current` → `target` is not a safe etcd upgrade, or None when it is."""
    c, t = _ver(current), _ver(target)
    if c is None or t is None or c == t:
        return None
    if t < c:
        return f"etcd {current} → {target} is a downgrade, which etcd does not support"
    if t[:2] == c[:2]:
        return None  # patch releases of one minor are interchangeable
    if t[0] != c[0] or t[1] != c[1] + 1:
        return f"etcd {current} → {target} skips a minor: upgrade one minor at a time"
    floor = UPGRADE_FLOOR.get(c[:2])
    if floor is not None and c < floor:
        need = ".".join(map(str, floor))
        return f"etcd {current} → {target}: every member must be on {need} or later first"
    return None


def upgrade_problems(running: Mapping[str, str | None], target: str) -> list[str]:
    """One line per host whose running etcd may not go to `target` directly."""
    return [f"{host}: {why}" for host, cur in running.items()
            if cur and (why := version_gate(cur, target))]
