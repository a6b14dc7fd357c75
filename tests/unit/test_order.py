"""Ordering inside a phase: declared stages become the executor's waves (plan.order,
plan.model.waves), bad orderings fail while planning, and a plan's JSON and symbols come
from the typed fields, not from numbers or text."""

from __future__ import annotations

import pytest

from homekube.cli.output import change_op
from homekube.components.base import Context, LocalState
from homekube.components.registry import phase_names
from homekube.components.removal import DrainPhase, RemovalPhase
from homekube.config.loader import load_text
from homekube.plan.model import Act, Change, ChangeKey, PhasePlan, Plan, Run, waves
from homekube.plan.order import declare, one_at_a_time, parallel
from tests.unit.test_kubernetes_plan import HA, NOW, host, installed

FIRST, ONE_BY_ONE, LAST = declare(
    "demo", parallel("first"), one_at_a_time("one by one", "stop", "start"), parallel("last"))


def ch(h: str, summary: str, **kw: object) -> Change:
    return Change(h, "demo", summary, summary, "why", (Run("true"),), **kw)  # type: ignore[arg-type]


def shape(ws: list[list[Change]]) -> list[list[tuple[str, str]]]:
    return [[(c.host, c.summary) for c in w] for w in ws]


def test_waves_follow_the_declared_stages_turns_and_steps() -> None:
    cs = [
        ch("b", "last b", order=LAST),
        ch("a", "start a", order=ONE_BY_ONE.turn(0, "start")),
        ch("c", "stop b (on c)", order=ONE_BY_ONE.turn(1, "stop")),
        ch("a", "first a", order=FIRST),
        ch("a", "stop a", order=ONE_BY_ONE.turn(0, "stop")),
        ch("b", "first b", order=FIRST),
        ch("a", "first a again", order=FIRST),
        ch("b", "start b", order=ONE_BY_ONE.turn(1, "start")),
        ch("a", "last a", order=LAST),
    ]
    assert shape(waves(cs)) == [
        [("a", "first a"), ("b", "first b"), ("a", "first a again")],  # plan order kept
        [("a", "stop a")], [("a", "start a")],
        [("c", "stop b (on c)")], [("b", "start b")],
        [("b", "last b"), ("a", "last a")],
    ]


def test_turn_numbers_only_order_gaps_do_not_matter() -> None:
    cs = [ch("a", "x", order=ONE_BY_ONE.turn(7, "stop")), ch("b", "y", order=ONE_BY_ONE.turn(2, "stop"))]
    assert shape(waves(cs)) == [[("b", "y")], [("a", "x")]]


def test_a_bad_ordering_fails_while_planning() -> None:
    (other,) = declare("other", parallel("x"))
    with pytest.raises(ValueError, match="has no stage"):
        PhasePlan("demo", "", (ch("a", "tagged", order=FIRST), ch("a", "untagged")))
    with pytest.raises(ValueError, match="one `declare`"):
        PhasePlan("demo", "", (ch("a", "one", order=FIRST), ch("a", "two", order=other)))
    with pytest.raises(ValueError, match="'loose' was not declared"):
        PhasePlan("demo", "", (ch("a", "undeclared", order=parallel("loose")),))
    with pytest.raises(ValueError, match="give a Change its turn"):
        PhasePlan("demo", "", (ch("a", "bare", order=ONE_BY_ONE),))
    with pytest.raises(ValueError, match="no turns"):
        FIRST.turn(0)
    with pytest.raises(ValueError, match="has steps"):
        ONE_BY_ONE.turn(0)
    with pytest.raises(ValueError, match="has steps"):
        ONE_BY_ONE.turn(0, "drain")
    with pytest.raises(ValueError, match="twice"):
        declare("dup", parallel("x"), parallel("x"))


def test_plan_json_counts_waves_from_zero_and_names_the_stage() -> None:
    cs = (ch("a", "first a", order=FIRST), ch("b", "stop b", order=ONE_BY_ONE.turn(3, "stop")),
          ch("b", "last b", order=LAST))
    out = Plan("c", ["a", "b"], [PhasePlan("demo", "", cs)]).to_json()
    got = [(c["summary"], c["wave"], c["stage"]) for h in ("a", "b") for c in out["hosts"][h]["changes"]]
    assert got == [("first a", 0, "first"), ("stop b", 1, "one by one #4 (stop)"), ("last b", 2, "last")]
    untagged = Plan("c", ["a"], [PhasePlan("demo", "", (ch("a", "one"), ch("a", "two")))])
    changes = untagged.to_json()["hosts"]["a"]["changes"]
    assert [(c["summary"], c["wave"]) for c in changes] == [("one", 0), ("two", 0)]
    assert all("stage" not in c for c in changes)


def test_removed_hosts_leave_one_at_a_time_drains_before_etcd_then_clean() -> None:
    cfg = load_text(HA)
    kept = cfg.model_copy(update={"hosts": [h for h in cfg.hosts if h.name in ("cp1", "cp2")]})
    facts = {n: installed(cfg, host(cfg, n)) for n in ("cp1", "cp2", "cp3", "w1")}
    gone = tuple(h for h in cfg.hosts if h.name in ("cp3", "w1"))
    ctx = Context(kept, facts, LocalState(), NOW, removed=gone)
    drains = PhasePlan("drain", "", tuple(DrainPhase().plan(ctx))).waves
    assert [[(c.host, c.resource) for c in w] for w in drains] == [
        [("cp1", "node cp3")], [("cp1", "node w1")]]
    cleans = PhasePlan("remove", "", tuple(RemovalPhase().plan(ctx))).waves
    assert [[(c.host, c.resource.split()[0]) for c in w] for w in cleans] == [
        [("cp3", "homekube")], [("w1", "homekube")]]
    names = phase_names()
    assert names.index("drain") < names.index("etcd") and names[-1] == "remove"


def test_the_plan_symbol_comes_from_the_key_before_the_text() -> None:
    def keyed(summary: str, act: Act, diff: str | None = None) -> Change:
        return Change("a", "p", "r", summary, "why", (), diff=diff, key=ChangeKey("k", "n", act))

    # worded to mislead the text guess: the key decides
    assert change_op(keyed("remove nothing, just start it", Act.START)) == "create"
    assert change_op(keyed("create nothing: restart", Act.RESTART)) == "change"
    # an existing empty file gets content: an update, although its diff starts at @@ -0,0
    assert change_op(keyed("update /x (content differs)", Act.UPDATE, "@@ -0,0 +1 @@\n+x")) == "change"
    # INSTALL covers install and upgrade: the summary still tells them apart
    assert change_op(keyed("install etcd 3.6.5", Act.INSTALL)) == "create"
    assert change_op(keyed("upgrade etcd 3.5.21 → 3.6.5", Act.INSTALL)) == "change"
    assert change_op(Change("a", "p", "r", "purge x", "why", ())) == "remove"  # no key: text
