"""Host preparation planning (pure): what changes, what does not, and why."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from homekube.components.base import Context, LocalState
from homekube.components.hostprep import (
    MODULES_FILE,
    SYSCTL_FILE,
    HostPrepPhase,
    modules_file,
    preflight,
    sysctl_file,
    wanted_sysctls,
)
from homekube.config.loader import load_text
from homekube.facts.system import FstabEntry, Memory, OsInfo, SwapDevice, SysctlState, UnitState
from homekube.plan.model import Change, NoChange
from tests.conftest import GOOD
from tests.unit.factsgen import GIB, converged_hostprep, debian12

CFG = load_text(GOOD.replace("192.0.2.54", "192.0.2.11").replace("2001:db8::54", "2001:db8::11"))
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def plan_for(f):  # type: ignore[no-untyped-def]
    one = CFG.model_copy(update={"hosts": (CFG.hosts[0],)})
    return HostPrepPhase().plan(Context(one, {"krusty": f}, LocalState(), NOW))


def fresh():  # type: ignore[no-untyped-def]
    return debian12("krusty")


def test_fresh_host_gets_everything() -> None:
    steps = plan_for(fresh())
    changes = [s for s in steps if isinstance(s, Change)]
    res = {c.resource for c in changes}
    assert {"packages", f"file {MODULES_FILE}", f"file {SYSCTL_FILE}"} <= res
    # missing sysctl keys are warnings (key absent on kernel), not changes
    assert any(isinstance(s, NoChange) and s.warning for s in steps)


def test_converged_host_has_no_changes() -> None:
    f = converged_hostprep(fresh(), wanted_sysctls(CFG),
                           {MODULES_FILE: modules_file(), SYSCTL_FILE: sysctl_file(CFG)})
    steps = plan_for(f)
    assert [s for s in steps if isinstance(s, Change)] == []
    assert all(not s.warning for s in steps if isinstance(s, NoChange))


def test_sysctl_drift_is_exactly_one_change() -> None:
    want = wanted_sysctls(CFG)
    f = converged_hostprep(fresh(), want, {MODULES_FILE: modules_file(), SYSCTL_FILE: sysctl_file(CFG)})
    f = replace(f, sysctls={**f.sysctls, "net.ipv4.ip_forward": SysctlState("0", True)})
    changes = [s for s in plan_for(f) if isinstance(s, Change)]
    assert [c.resource for c in changes] == ["sysctl net.ipv4.ip_forward"]
    assert "ip_forward=1" in changes[0].actions[0].describe()


def test_read_only_sysctl_is_a_warning_with_current_value() -> None:
    cfg = load_text(GOOD.replace("192.0.2.54", "192.0.2.11").replace("2001:db8::54", "2001:db8::11")
                    + "hostPrep: {sysctls: {fs.inotify.max_user_instances: '8192'}}\n")
    f = converged_hostprep(fresh(), wanted_sysctls(cfg), {MODULES_FILE: modules_file(), SYSCTL_FILE: sysctl_file(cfg)})
    f = replace(f, sysctls={**f.sysctls, "fs.inotify.max_user_instances": SysctlState("128", False)})
    one = cfg.model_copy(update={"hosts": (cfg.hosts[0],)})
    steps = HostPrepPhase().plan(Context(one, {"krusty": f}, LocalState(), NOW))
    warn = [s for s in steps if isinstance(s, NoChange) and s.warning]
    assert len(warn) == 1 and "read-only" in warn[0].reason and "128" in warn[0].reason
    assert not [s for s in steps if isinstance(s, Change)]


def test_swap_and_fstab() -> None:
    f = replace(fresh(), swaps=[SwapDevice("/swapfile", "file", 1024)],
                fstab=[FstabEntry(3, "/swapfile", "none", "swap", "/swapfile none swap sw 0 0")])
    res = {c.resource: c for c in plan_for(f) if isinstance(c, Change)}
    assert "swapoff -a" in res["swap"].actions[0].describe()
    assert "3s/^/# disabled by homekube: /" in res["fstab swap"].actions[0].describe()


def test_networkmanager_and_firewalld() -> None:
    f = replace(fresh(), units={
        "NetworkManager.service": UnitState("NetworkManager.service", "loaded", "active", "enabled"),
        "firewalld.service": UnitState("firewalld.service", "loaded", "active", "enabled"),
    })
    res = {c.resource: c for c in plan_for(f) if isinstance(c, Change)}
    assert "file /etc/NetworkManager/conf.d/calico.conf" in res
    assert "disable --now firewalld" in res["firewalld"].actions[0].describe()


def test_builtin_module_counts_as_present() -> None:
    f = replace(fresh(), modules={"overlay": "builtin", "br_netfilter": "builtin"})
    mods = [s for s in plan_for(f) if s.resource.startswith("module ")]
    assert all(isinstance(s, NoChange) and "built in" in s.reason for s in mods)


def test_rhel_uses_dnf_names() -> None:
    f = replace(fresh(), os=OsInfo("rocky", "9.4", ("rhel", "centos", "fedora"), "Rocky Linux 9.4"))
    pk = next(s for s in plan_for(f) if s.resource == "packages")
    assert isinstance(pk, Change)
    text = pk.actions[0].describe()
    assert "dnf install" in text and "conntrack-tools" in text and "iptables-nft" in text


def test_preflight_refuses_small_and_unsupported_hosts() -> None:
    h = CFG.hosts[0]
    small = replace(fresh(), cpus=1, memory=Memory(1 * GIB, GIB, 0, 0),
                    os=OsInfo("centos", "8", ("rhel",), "CentOS Linux 8"))
    msgs = [x.message for x in preflight(CFG, h, small) if x.fatal]
    assert any("CPU" in m for m in msgs)
    assert any("RAM" in m for m in msgs)
    assert any("unsupported OS" in m for m in msgs)


def test_preflight_cgroup_v1_depends_on_kubernetes_layer() -> None:
    h = CFG.hosts[0]
    v1 = replace(fresh(), cgroup=1)
    assert any("cgroup v1" in x.message for x in preflight(CFG, h, v1) if x.fatal)
    off = load_text(GOOD.replace('version: "1.36"', 'enabled: false, version: "1.36"'))
    assert not any("cgroup" in x.message for x in preflight(off, off.hosts[0], replace(
        v1, addresses=debian12(v4="192.0.2.54", v6="2001:db8::54").addresses)))


def test_preflight_warns_under_4gib() -> None:
    f = replace(fresh(), memory=Memory(2 * GIB, GIB, 0, 0))
    found = preflight(CFG, CFG.hosts[0], f)
    assert any(not x.fatal and "4 GiB" in x.message for x in found)
    assert not any(x.fatal for x in found)


def test_preflight_address_must_exist() -> None:
    f = debian12("krusty", v4="192.0.2.99")
    assert any("192.0.2.11" in x.message for x in preflight(CFG, CFG.hosts[0], f) if x.fatal)


def test_no_internal_document_is_cited_on_hosts_or_in_plans() -> None:
    """Files written on hosts and the reasons a plan gives are read by users, who do not have
    the developers' fact sheet."""
    from homekube.components.registry import rendered_files

    f = replace(fresh(), units={
        "NetworkManager.service": UnitState("NetworkManager.service", "loaded", "active", "enabled"),
        "firewalld.service": UnitState("firewalld.service", "loaded", "active", "enabled"),
    })
    for c in plan_for(f):
        text = c.why if isinstance(c, Change) else c.reason
        assert "facts.md" not in text and "§" not in text, text
    for host, path, content, _secret in rendered_files(CFG):
        assert b"facts.md" not in content and "§".encode() not in content, (host, path)
