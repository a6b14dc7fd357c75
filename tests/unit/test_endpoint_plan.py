"""kubernetes.endpoint: the keepalived virtual address, its refusals and its status (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from homekube.components import endpoint as ep
from homekube.components.base import Context, LocalState
from homekube.components.planner import build_plan
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.errors import ConfigError, RefusedError
from homekube.facts.host import HostFacts
from homekube.facts.system import Address, PackageState, UnitState
from homekube.plan.model import Change, NoChange, Run, WriteFile
from homekube.render.kubernetes import control_plane_endpoint, kubeadm_init_config
from tests.unit.test_kubernetes_plan import NOW, fstate, host, installed, with_files

VIP = "192.0.2.50"
HA_VIP = f"""\
name: ha
kubernetes: {{version: "1.36", endpoint: {{kind: vip, address: {VIP}}}}}
network: {{pods: [10.42.0.0/16], services: [10.96.0.0/16]}}
hosts:
  - {{name: cp1, address: 192.0.2.21, roles: [control-plane, etcd]}}
  - {{name: cp2, address: 192.0.2.22, roles: [control-plane, etcd]}}
  - {{name: cp3, address: 192.0.2.23, roles: [control-plane, etcd]}}
  - {{name: w1, address: 192.0.2.31, roles: [worker]}}
"""
CFG = load_text(HA_VIP)
CPS = ("cp1", "cp2", "cp3")


def facts(cfg: ClusterConfig = CFG) -> dict[str, HostFacts]:
    return {h.name: installed(cfg, host(cfg, h.name)) for h in cfg.hosts}


def plan_steps(cfg: ClusterConfig, fs: dict[str, HostFacts], removed: tuple = ()) -> list:
    ctx = Context(cfg, fs, LocalState(), NOW, removed=removed)
    return list(ep.EndpointPhase().plan(ctx))


def test_the_virtual_address_is_the_endpoint_and_in_the_first_certificate() -> None:
    assert control_plane_endpoint(CFG) == f"{VIP}:6443"
    text = kubeadm_init_config(CFG, "cp1", kubeadm_version="v1.36.4")
    assert f"controlPlaneEndpoint: {VIP}:6443" in text
    sans = text.split("certSANs:")[1].split("\n\n")[0]
    assert f"- {VIP}" in sans and "- 192.0.2.22" in sans and "- 192.0.2.23" in sans


def test_fresh_control_planes_get_keepalived_with_unicast_peers() -> None:
    steps = plan_steps(CFG, facts())
    hosts = {s.host for s in steps}
    assert hosts == set(CPS)  # the worker gets nothing
    conf = next(a for s in steps if isinstance(s, Change) and s.host == "cp2" for a in s.actions
                if isinstance(a, WriteFile) and a.path == ep.KEEPALIVED_CONF)
    text = conf.content.decode()
    assert "unicast_src_ip 192.0.2.22" in text
    assert "        192.0.2.21\n        192.0.2.23\n" in text
    assert f"{VIP}/24 dev eth0" in text and "interface eth0" in text
    assert "weight -50" in text and "init_fail" in text and "priority 100" in text
    whats = [s.summary for s in steps if isinstance(s, Change) and s.host == "cp1"]
    assert whats == [f"create {ep.CHECK_SCRIPT}", f"create {ep.KEEPALIVED_CONF}",
                     "install curl, keepalived", f"enable and start {ep.UNIT}"]
    install = next(s for s in steps if isinstance(s, Change) and s.summary.startswith("install"))
    assert "/var/lib/homekube/packages" in install.actions[0].command  # reset removes it again


def test_the_phase_runs_before_kubeadm() -> None:
    from homekube.components.kubernetes import kubernetes_phases

    names = [p.name for p in kubernetes_phases()]
    assert names.index("endpoint") == names.index("kubeadm") - 1


def converged(cfg: ClusterConfig = CFG) -> dict[str, HostFacts]:
    fs = facts(cfg)
    for name in CPS:
        f = fs[name]
        h = cfg.host(name)
        conf = ep.keepalived_conf(cfg, h, "eth0", 24)
        f = with_files(f, fstate(ep.KEEPALIVED_CONF, conf), fstate(ep.CHECK_SCRIPT, ep.CHECK, 0o755))
        fs[name] = replace(f, packages={**f.packages, **{p: PackageState(p, "1") for p in ep.PACKAGES}},
                           units={**f.units, ep.UNIT: UnitState(ep.UNIT, "loaded", "active", "enabled")})
    return fs


def test_a_converged_endpoint_plans_nothing() -> None:
    steps = plan_steps(CFG, converged())
    assert steps and all(isinstance(s, NoChange) for s in steps), [s for s in steps if isinstance(s, Change)]


def test_a_changed_config_reloads_keepalived_instead_of_restarting() -> None:
    cfg = load_text(HA_VIP.replace(f"address: {VIP}}}", f"address: {VIP}, routerId: 77}}"))
    steps = [s for s in plan_steps(cfg, converged()) if isinstance(s, Change)]
    assert {s.host for s in steps} == set(CPS)
    reload = [s for s in steps if s.resource == f"unit {ep.UNIT}"]
    assert all(s.summary == f"reload {ep.UNIT}" for s in reload) and len(reload) == 3
    assert "systemctl reload keepalived.service" in reload[0].actions[0].command  # type: ignore[union-attr]


def test_an_address_off_the_hosts_network_is_refused() -> None:
    cfg = load_text(HA_VIP.replace(VIP, "198.51.100.50"))
    with pytest.raises(RefusedError, match=r"198\.51\.100\.50 is not on cp1's network 192\.0\.2\.0/24"):
        plan_steps(cfg, facts(cfg))


def test_an_odd_etcd_is_required_with_a_virtual_endpoint() -> None:
    two = HA_VIP.replace("cp3, address: 192.0.2.23, roles: [control-plane, etcd]",
                         "cp3, address: 192.0.2.23, roles: [control-plane]")
    with pytest.raises(ConfigError, match="use an odd count"):
        load_text(two)


def running(cfg: ClusterConfig, names: tuple[str, ...], server: str) -> dict[str, HostFacts]:
    fs = facts(cfg)
    for n in names:
        f = with_files(fs[n], fstate(ep.APISERVER_MANIFEST), fstate(ep.ADMIN_CONF, b"", 0o600))
        fs[n] = replace(f, extra={**f.extra, "endpoint": ep.EndpointFacts(server=server, local="ok")})
    return fs


def test_a_running_cluster_is_not_moved_to_a_new_endpoint() -> None:
    fs = running(CFG, ("cp1",), "https://192.0.2.21:6443")
    with pytest.raises(RefusedError, match="moving a running cluster to another endpoint") as e:
        plan_steps(CFG, fs)
    assert f"cluster.yaml wants https://{VIP}:6443" in str(e.value)


def test_removing_a_running_control_plane_is_refused() -> None:
    one = HA_VIP.replace("cp3, address: 192.0.2.23, roles: [control-plane, etcd]",
                         "cp3, address: 192.0.2.23, roles: [etcd, worker]")
    cfg = load_text(one)
    fs = running(cfg, CPS, f"https://{VIP}:6443")
    with pytest.raises(RefusedError, match=r"cp3 runs a control plane .* lost the control-plane role"):
        plan_steps(cfg, fs)


def test_removing_the_last_control_plane_is_refused() -> None:
    # cp1 was the only control plane; cluster.yaml now names cp2 instead: a fresh init there
    # would make a second cluster
    cfg = load_text(HA_VIP.replace("cp1, address: 192.0.2.21, roles: [control-plane, etcd]",
                                   "cp1, address: 192.0.2.21, roles: [etcd, worker]"))
    fs = running(cfg, ("cp1",), f"https://{VIP}:6443")
    with pytest.raises(RefusedError, match="removing a control plane is not supported yet"):
        build_plan([ep.EndpointPhase()], Context(cfg, fs, LocalState(), NOW))
    with pytest.raises(ConfigError, match="at least one host needs the control-plane role"):
        load_text(HA_VIP.replace("control-plane, etcd", "etcd"))


def test_a_running_single_control_plane_without_endpoint_is_not_grown() -> None:
    plain = """\
name: one
kubernetes: {version: "1.36"}
network: {pods: [10.42.0.0/16], services: [10.96.0.0/16]}
hosts:
  - {name: cp1, address: 192.0.2.21, roles: [control-plane, etcd]}
  - {name: cp2, address: 192.0.2.22, roles: [control-plane, etcd]}
  - {name: cp3, address: 192.0.2.23, roles: [control-plane, etcd]}
"""
    cfg = load_text(plain)
    fs = running(cfg, ("cp1",), "https://192.0.2.21:6443")
    with pytest.raises(RefusedError, match="converting a 1-control-plane cluster to a highly available one "
                                           "is not supported yet"):
        plan_steps(cfg, fs)
    # the same cluster without new control planes plans on
    cfg1 = load_text(plain.replace("roles: [control-plane, etcd]}\n  - {name: cp3",
                                   "roles: [etcd]}\n  - {name: cp3").replace(
        "cp3, address: 192.0.2.23, roles: [control-plane, etcd]", "cp3, address: 192.0.2.23, roles: [etcd]"))
    assert plan_steps(cfg1, running(cfg1, ("cp1",), "https://192.0.2.21:6443")) == []


def test_endpoint_fact_is_parsed() -> None:
    f = ep.parse_endpoint_fact(f"server=https://{VIP}:6443\nlocal=ok\nvip=curl: (7) refused\n")
    assert f == ep.EndpointFacts(f"https://{VIP}:6443", "ok", "curl: (7) refused")
    assert ep.parse_endpoint_fact("") == ep.EndpointFacts()
    cmd = ep.endpoint_fact(CFG, CFG.host("cp1")).command
    assert f"https://{VIP}:6443/readyz" in cmd and "https://127.0.0.1:6443/readyz" in cmd
    assert "127.0.0.1" not in ep.endpoint_fact(CFG, CFG.host("w1")).command


def test_status_names_the_holder() -> None:
    fs = converged()
    f = fs["cp2"]
    fs["cp2"] = replace(f, addresses=[*f.addresses, Address("eth0", 4, VIP, 24)])
    for n in CPS:
        fs[n] = replace(fs[n], extra={**fs[n].extra, "endpoint": ep.EndpointFacts(local="ok", via_vip="ok")})
    st = ep.endpoint_status(CFG, fs)
    assert st is not None
    assert st["holder"] == "cp2" and st["answers"] is True and st["apiServersReady"] is True
    del fs["cp2"]
    st = ep.endpoint_status(CFG, fs)
    assert st is not None and st["holder"] is None and st["holders"] == []
    assert ep.endpoint_status(load_text(HA_VIP.replace(f"endpoint: {{kind: vip, address: {VIP}}}",
                                                       'controlPlaneEndpoint: "k8s:6443"')), fs) is None


def test_run_commands_are_plain() -> None:
    for s in plan_steps(CFG, facts()):
        if isinstance(s, Change):
            for a in s.actions:
                assert not isinstance(a, Run) or "\n" not in a.command or "apt-get" in a.command
