"""The etcd phase planned from synthetic facts: bootstrap, growth, a leftover learner, shrink,
a rolling restart (issue 13, item 6).

Hosts that "ran" a plan get its files through :func:`applied` (the WriteFile actions put into
their facts) plus what etcd itself would report; assertions are on the Changes' hosts, typed
keys and waves, never on their display text.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from homekube.components.base import Context, LocalState
from homekube.components.etcd import (
    INSTALL_KEY,
    RETIRE_KEY,
    EtcdPhase,
    EtcdPkiPhase,
    member_key,
    restart_key,
    start_key,
)
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.errors import RefusedError
from homekube.etcd import layout
from homekube.etcd.api import EtcdMember, EtcdStatus
from homekube.etcd.shell import MOVE_LEADER, EtcdHostFacts
from homekube.facts.host import HostFacts
from homekube.facts.system import FileState, UnitState
from homekube.pki.issue import generate_key, issue_ca
from homekube.pki.spec import etcd_ca_spec
from homekube.plan.model import Act, Change, ChangeKey, NoChange, Run, Step, WriteFile, waves
from homekube.render import etcd as r
from tests.unit.factsgen import debian12

NOW = datetime(2026, 11, 25, tzinfo=UTC)
VERSION = "3.6.14"
_CA_KEY = generate_key("ecdsa-p256")
LOCAL = LocalState(etcd_ca_cert=issue_ca(etcd_ca_spec(), _CA_KEY, NOW), etcd_ca_key=_CA_KEY)
HOSTS = {"a": "192.0.2.11", "b": "192.0.2.12", "c": "192.0.2.13"}


def config(etcd_hosts: str = "abc", *, heartbeat: int = 100) -> ClusterConfig:
    """Hosts a, b, c; those in `etcd_hosts` have the etcd role, the others are workers."""
    rows = "\n".join(
        f"  - {{name: {n}, address: {ip}, roles: [{'etcd' if n in etcd_hosts else 'worker'}]}}"
        for n, ip in HOSTS.items())
    return load_text(textwrap.dedent(f"""\
        name: home
        kubernetes: {{enabled: false}}
        etcd: {{version: "{VERSION}", heartbeatMs: {heartbeat}}}
        ssh: {{key: null, knownHosts: null, config: null}}
        hosts:
        """) + rows + "\n")


def bare(cfg: ClusterConfig) -> dict[str, HostFacts]:
    return {n: debian12(n, v4=ip, v6=None) for n, ip in HOSTS.items() if n in {h.name for h in cfg.hosts}}


def ctx(cfg: ClusterConfig, facts: dict[str, HostFacts]) -> Context:
    return Context(cfg, facts, LOCAL, NOW)


def plan(cfg: ClusterConfig, facts: dict[str, HostFacts]) -> list[Step]:
    return EtcdPhase().plan(ctx(cfg, facts))


def changes(steps: list[Step]) -> list[Change]:
    return [s for s in steps if isinstance(s, Change)]


def applied(f: HostFacts, steps: list[Step]) -> HostFacts:
    """`f` after the WriteFile actions of `steps` for its host ran."""
    files = dict(f.files)
    for c in changes(steps):
        for a in c.actions if c.host == f.host else ():
            if isinstance(a, WriteFile):
                files[a.path] = FileState(a.path, a.mode, a.owner, a.group, len(a.content),
                                          hashlib.sha256(a.content).hexdigest(), a.content)
    return replace(f, files=files)


def member(name: str, *, learner: bool = False, started: bool = True) -> EtcdMember:
    return EtcdMember(id=0xA0 + ord(name), name=name if started else "",
                      peer_urls=(f"https://{HOSTS[name]}:{layout.PEER_PORT}",),
                      client_urls=(f"https://{HOSTS[name]}:{layout.CLIENT_PORT}",) if started else (),
                      learner=learner)


def running(cfg: ClusterConfig, facts: dict[str, HostFacts], live: list[EtcdMember],
            names: str) -> dict[str, HostFacts]:
    """Facts after `cfg` was applied to the hosts in `names`, whose etcd now lists `live`."""
    c = ctx(cfg, facts)
    steps = EtcdPkiPhase().plan(c) + EtcdPhase().plan(c)
    out = dict(facts)
    for n in names:
        f = applied(facts[n], steps)
        data = FileState(cfg.etcd.data_dir, 0o700, "etcd", "etcd", 4096, "-", None, "dir")
        etcd = EtcdHostFacts(True, {layout.TARBALL_BIN: VERSION}, True, live,
                             EtcdStatus(VERSION, 1 << 20, 10, live[0].id, member(n).id, False))
        out[n] = replace(
            f, files={**f.files, cfg.etcd.data_dir: data},
            units={**f.units, layout.UNIT: UnitState(layout.UNIT, "loaded", "active", "enabled")},
            extra={**f.extra, "etcd": etcd, "caps": {"oom": True, "nice": True}},
        )
    return out


def schedule(steps: list[Step], *kinds: str) -> list[tuple[str, str, ChangeKey | None]]:
    """(stage, host, key) of the Changes whose key kind is in `kinds`, in plan order."""
    return [(str(c.order), c.host, c.key) for c in changes(steps)
            if c.key is not None and c.key.kind in kinds]


def waves_of(steps: list[Step]) -> list[list[tuple[str, ChangeKey | None]]]:
    """(host, key) of every Change, wave by wave, as the executor runs them."""
    return [[(c.host, c.key) for c in w] for w in waves(changes(steps))]


def initial_cluster(f: HostFacts, steps: list[Step]) -> str:
    conf = applied(f, steps).file(layout.CONFIG_PATH)
    assert conf is not None and conf.content is not None
    return r.parse_bootstrap(conf.content)["initial-cluster"]


def peers(names: str) -> str:
    return ",".join(f"{n}=https://{HOSTS[n]}:{layout.PEER_PORT}" for n in names)


# ------------------------------------------------------------------------------------ cases


def test_fresh_bootstrap_starts_every_member_together() -> None:
    cfg = config()
    facts = bare(cfg)
    steps = plan(cfg, facts)
    assert {c.host for c in changes(steps) if c.key == INSTALL_KEY} == set("abc")
    file_keys = {(c.host, c.key) for c in changes(steps) if c.key is not None and c.key.kind == "file"}
    for n in "abc":
        for path in (layout.CONFIG_PATH, layout.UNIT_PATH, layout.ENV_FILE):
            assert (n, ChangeKey("file", path, Act.CREATE)) in file_keys
        assert initial_cluster(facts[n], steps) == peers("abc")
    # every member starts in the same wave (initial-cluster-state new), after everything else
    assert schedule(steps, "unit", "etcd-member") == [("bootstrap", n, start_key("bootstrap")) for n in "abc"]
    assert all(str(c.order) == "install" for c in changes(steps) if c.key is None or c.key.kind != "unit")
    assert len(waves(changes(steps))) == 2
    assert waves_of(steps)[1] == [(n, start_key("bootstrap")) for n in "abc"]


def test_converged_cluster_plans_no_change() -> None:
    cfg = config()
    facts = running(cfg, bare(cfg), [member(n) for n in "abc"], "abc")
    steps = plan(cfg, facts)
    assert changes(steps) == []
    assert {s.host for s in steps if isinstance(s, NoChange)} == set("abc")


def test_growth_from_one_to_three_adds_learners_one_at_a_time() -> None:
    one = config("a")
    facts = running(one, bare(one), [member("a")], "a")
    cfg = config("abc")
    steps = plan(cfg, facts)
    assert not [c for c in changes(steps) if c.host == "a" and c.key is not None and c.key.kind != "etcd-member"]
    # after the install wave, one wave per step, new member by new member
    assert waves_of(steps)[1:] == [
        [("a", member_key("b", "add"))],
        [("b", start_key("join"))],
        [("a", member_key("b", "promote"))],
        [("a", member_key("c", "add"))],
        [("c", start_key("join"))],
        [("a", member_key("c", "promote"))],
    ]
    assert schedule(steps, "unit", "etcd-member")[0] == ("grow #1 (add)", "a", member_key("b", "add"))
    # each joining member starts into the cluster as it will be when it starts
    assert initial_cluster(facts["b"], steps) == peers("ab")
    assert initial_cluster(facts["c"], steps) == peers("abc")
    assert {c.host for c in changes(steps) if c.key == INSTALL_KEY} == {"b", "c"}


def test_a_leftover_learner_is_promoted() -> None:
    """Growth was interrupted after b started as a learner: only the promote is left."""
    cfg = config("ab")
    live = [member("a"), member("b", learner=True)]
    facts = running(cfg, bare(cfg), live, "ab")
    steps = plan(cfg, facts)
    assert [(str(c.order), c.host, c.key) for c in changes(steps)] == [
        ("promote leftovers", "a", member_key("b", "promote"))]


def test_an_added_member_that_never_started_is_finished_not_removed() -> None:
    """`member add` ran but b never started: its nameless entry is b's pending join."""
    cfg = config("ab")
    facts = running(cfg, bare(cfg), [member("a"), member("b", learner=True, started=False)], "a")
    steps = plan(cfg, facts)
    kinds = schedule(steps, "unit", "etcd-member")
    assert ("grow #1 (start)", "b", start_key("join")) in kinds
    assert not [k for _, _, k in kinds if k is not None and "remove" in k.causes]


def test_shrink_removes_the_member_then_retires_its_host() -> None:
    three = config("abc")
    live = [member(n) for n in "abc"]
    facts = running(three, bare(three), live, "abc")
    cfg = config("ab")  # c keeps running as a worker
    steps = plan(cfg, facts)
    assert waves_of(steps) == [[("a", member_key("c", "remove"))], [("c", RETIRE_KEY)]]


def test_shrink_that_would_lose_quorum_is_refused() -> None:
    three = config("abc")
    live = [member(n) for n in "abc"]
    facts = running(three, bare(three), live, "abc")
    down = facts["b"]
    facts["b"] = replace(down, extra={**down.extra, "etcd": replace(down.extra["etcd"], members=None)})
    with pytest.raises(RefusedError, match="would leave 1 healthy of 2"):
        plan(config("ab"), facts)


def test_tuning_change_restarts_members_one_at_a_time() -> None:
    before = config(heartbeat=100)
    facts = running(before, bare(before), [member(n) for n in "abc"], "abc")
    steps = plan(config(heartbeat=150), facts)
    config_keys = {c.host for c in changes(steps) if c.key is not None and c.key.name == layout.CONFIG_PATH}
    assert config_keys == set("abc")
    # config files everywhere at once, then one restart per wave
    assert waves_of(steps)[1:] == [[(n, restart_key(["config"]))] for n in "abc"]
    assert [s for s, _, _ in schedule(steps, "unit")] == [f"restart #{i}" for i in (1, 2, 3)]
    for c in changes(steps):
        if c.key == restart_key(["config"]):
            runs = [a for a in c.actions if isinstance(a, Run)]
            # leadership moves away before the restart, health is awaited after it
            assert runs[0].command == MOVE_LEADER
