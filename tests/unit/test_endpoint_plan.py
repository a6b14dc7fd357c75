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
from homekube.plan.model import Change, LocalWrite, NoChange, Run, WriteFile
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
    # from another endpoint (not the only control plane's own address): refused
    fs = running(CFG, ("cp1",), "https://192.0.2.99:6443")
    with pytest.raises(RefusedError, match="not from one endpoint to another") as e:
        plan_steps(CFG, fs)
    assert f"cluster.yaml wants https://{VIP}:6443" in str(e.value)
    # from cp1's own address, with two control planes already running: refused too
    fs = running(CFG, ("cp1", "cp2"), "https://192.0.2.21:6443")
    with pytest.raises(RefusedError, match="not from one endpoint to another"):
        plan_steps(CFG, fs)
    # from the only control plane's own address: the conversion (see test_conversion_*)
    assert plan_steps(CFG, running(CFG, ("cp1",), "https://192.0.2.21:6443"))


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


# ---------------------------------------------------------------------------------------------
# a running cluster follows cluster.yaml: the conversion to the endpoint, etcd membership


OLD = "https://192.0.2.21:6443"
NEW = f"https://{VIP}:6443"


def apiserver_cert(*ips: str) -> bytes:
    from homekube.pki.issue import generate_key, issue_ca, issue_cert
    from homekube.pki.spec import CertSpec

    ca_key = generate_key("ecdsa-p256")
    ca = issue_ca(CertSpec(name="ca", common_name="kubernetes", is_ca=True), ca_key, NOW)
    spec = CertSpec(name="apiserver", common_name="kube-apiserver", server_auth=True, issuer="ca",
                    dns_names=("kubernetes", "cp1"), ip_addresses=("10.96.0.1", *ips))
    return issue_cert(spec, generate_key("ecdsa-p256"), ca, ca_key, NOW)


def one_cp_running(cfg: ClusterConfig, server: str, etcd: tuple[str, ...], sans: list[str],
                   cert_ips: tuple[str, ...]) -> dict[str, HostFacts]:
    """cp1 initialised alone (API at `server`); the other control planes not joined; w1 joined."""
    from homekube.components.cp_config import APISERVER_CRT
    from tests.unit.test_kubernetes_plan import cluster_ca, joined, running_cp

    ca_pem, _ = cluster_ca()
    fs = {h.name: installed(cfg, host(cfg, h.name)) for h in cfg.hosts}
    f = with_files(running_cp(cfg, "cp1", ca_pem), fstate(ep.APISERVER_MANIFEST),
                   fstate(APISERVER_CRT, apiserver_cert(*cert_ips)),
                   fstate(ep.SUPER_ADMIN_CONF, b"", 0o600))
    cc = {"controlPlaneEndpoint": server.removeprefix("https://"),
          "etcd": {"external": {"endpoints": list(etcd)}}, "apiServer": {"certSANs": sans}}
    fs["cp1"] = replace(f, extra={**f.extra, "endpoint": ep.EndpointFacts(
        server=server, local="ok", kubelet=server, super_admin=server, etcd_servers=etcd,
        cluster_config=cc, proxy=server, cluster_info=server)})
    w = joined(cfg, "w1")
    fs["w1"] = replace(w, extra={**w.extra, "endpoint": ep.EndpointFacts(server=server, kubelet=server)})
    return fs


def _order(p: object, phase: str) -> list[tuple[int, str, str]]:
    from tests.unit.waves import wave_of

    steps = next(ph for ph in p.phases if ph.name == phase).steps  # type: ignore[attr-defined]
    wave = wave_of(steps)
    return [(wave(c), c.host, c.resource) for c in steps if isinstance(c, Change)]


def test_conversion_of_a_single_control_plane_is_planned_in_order(tmp_path: object) -> None:
    from homekube.components.kubernetes import kubernetes_phases
    from homekube.render.kubernetes import etcd_servers

    fs = one_cp_running(CFG, OLD, ("https://192.0.2.21:2379",), ["192.0.2.21"], ("192.0.2.21",))
    handed = {"/home/me/.kube/lab": f"clusters:\n- cluster:\n    server: {OLD}\n  name: ha\n".encode(),
              "/home/me/.kube/tunnel": b"clusters:\n- cluster:\n    server: https://127.0.0.1:7443\n"}
    ctx = Context(CFG, fs, LocalState(kubeconfigs=handed), NOW)
    p = build_plan(kubernetes_phases(), ctx)
    # keepalived on the three control planes, then (on cp1) the wait for the address
    endpoint = _order(p, "endpoint")
    assert {h for _, h, _ in endpoint} == set(CPS)
    assert [r for _, h, r in endpoint if h == "cp1"][-1] == "address"
    wait = next(c for ph in p.phases for c in ph.steps if isinstance(c, Change) and c.resource == "address")
    assert VIP in wait.actions[0].command and "cp1 (endpoint address)" in wait.actions[0].command  # type: ignore[union-attr]
    order = _order(p, "kubeadm")
    waves_of = {(h, r): w for w, h, r in order}
    assert waves_of[("cp1", "kubeadm-config")] < waves_of[("cp1", "apiserver certificate")] \
        < waves_of[("cp1", ep.ADMIN_CONF)]
    kubeconfigs = waves_of[("cp1", ep.ADMIN_CONF)]
    for key in (("cp1", ep.SUPER_ADMIN_CONF), ("w1", ep.KUBELET_CONF),
                ("cp1", "configmap kube-system/kube-proxy"), ("cp1", "configmap kube-public/cluster-info"),
                ("cp1", "kubeconfig /home/me/.kube/lab")):
        assert waves_of[key] == kubeconfigs, key
    assert ("cp1", "kubeconfig /home/me/.kube/tunnel") not in waves_of  # an SSH tunnel: left alone
    assert kubeconfigs < waves_of[("cp1", "bootstrap token")] == waves_of[("cp1", "upload-certs")] \
        < waves_of[("cp2", "join")] < waves_of[("cp3", "join")]
    # cp1's API server restarts (new --etcd-servers) only once cp2 and cp3 serve: the address
    # moves to them meanwhile instead of the API being down
    assert waves_of[("cp3", "join")] < waves_of[("cp1", "kube-apiserver manifest")]
    assert waves_of[("cp1", "kube-apiserver manifest")] == max(w for w, _, _ in order)
    kubeadm = {(c.host, c.resource): c for ph in p.phases if ph.name == "kubeadm" for c in ph.changes}
    upload = kubeadm[("cp1", "kubeadm-config")]
    conf = next(a for a in upload.actions if isinstance(a, WriteFile))
    text = conf.content.decode()
    assert f"controlPlaneEndpoint: {VIP}:6443" in text and all(
        u in text for u in etcd_servers(CFG))
    assert "kubeadm init phase upload-config kubeadm --config" in upload.actions[1].command  # type: ignore[union-attr]
    cert = kubeadm[("cp1", "apiserver certificate")]
    assert VIP in cert.summary and "192.0.2.22" in cert.summary
    assert "kubeadm init phase certs apiserver" in cert.actions[1].command  # type: ignore[union-attr]
    manifest = kubeadm[("cp1", "kube-apiserver manifest")]
    flag = "--etcd-servers=" + ",".join(etcd_servers(CFG))
    assert "kubeadm init phase control-plane apiserver" in manifest.actions[1].command  # type: ignore[union-attr]
    assert flag in manifest.actions[2].command  # type: ignore[union-attr]
    kubelet = kubeadm[("w1", ep.KUBELET_CONF)]
    assert NEW in kubelet.actions[0].command and "systemctl restart kubelet" in kubelet.actions[1].command  # type: ignore[union-attr]
    proxy = kubeadm[("cp1", "configmap kube-system/kube-proxy")]
    assert "rollout restart daemonset/kube-proxy" in proxy.actions[1].command  # type: ignore[union-attr]
    local = kubeadm[("cp1", "kubeconfig /home/me/.kube/lab")]
    (lw,) = local.actions
    assert isinstance(lw, LocalWrite) and f"server: {NEW}" in lw.content.decode() and lw.mode == 0o600


def test_a_converted_cluster_plans_nothing_more() -> None:
    from homekube.components.kubernetes import KubeadmPhase
    from homekube.render.kubernetes import api_server_sans, etcd_servers

    one = HA_VIP.replace("cp2, address: 192.0.2.22, roles: [control-plane, etcd]",
                         "cp2, address: 192.0.2.22, roles: [etcd]").replace(
        "cp3, address: 192.0.2.23, roles: [control-plane, etcd]", "cp3, address: 192.0.2.23, roles: [etcd]")
    cfg = load_text(one)
    fs = one_cp_running(cfg, NEW, tuple(etcd_servers(cfg)), api_server_sans(cfg), ("192.0.2.21", VIP))
    steps = KubeadmPhase().plan(Context(cfg, fs, LocalState(), NOW))
    assert not [s for s in steps if isinstance(s, Change)], [s for s in steps if isinstance(s, Change)]
    assert {s.resource for s in steps} >= {"kubeadm-config", "apiserver certificate", "kube-apiserver manifest",
                                           ep.ADMIN_CONF, ep.KUBELET_CONF, "configmap kube-system/kube-proxy"}


def test_the_api_servers_follow_etcd_membership_without_an_endpoint() -> None:
    """No endpoint, one control plane, etcd grown from 1 to 3 members: kubeadm-config's and
    the manifest's etcd endpoints follow; nothing else is touched."""
    from homekube.components.kubernetes import KubeadmPhase
    from homekube.render.kubernetes import api_server_sans, etcd_servers

    plain = """\
name: one
kubernetes: {version: "1.36"}
network: {pods: [10.42.0.0/16], services: [10.96.0.0/16]}
hosts:
  - {name: cp1, address: 192.0.2.21, roles: [control-plane, etcd]}
  - {name: e2, address: 192.0.2.22, roles: [etcd]}
  - {name: e3, address: 192.0.2.23, roles: [etcd]}
  - {name: w1, address: 192.0.2.31, roles: [worker]}
"""
    cfg = load_text(plain)
    fs = one_cp_running(cfg, OLD, ("https://192.0.2.21:2379",), api_server_sans(cfg), ("192.0.2.21",))
    steps = KubeadmPhase().plan(Context(cfg, fs, LocalState(), NOW))
    ch = {s.resource: s for s in steps if isinstance(s, Change)}
    assert set(ch) == {"kubeadm-config", "kube-apiserver manifest"}, set(ch)
    assert "etcd endpoints are https://192.0.2.21:2379" in ch["kubeadm-config"].why
    assert "3 etcd server(s)" in ch["kube-apiserver manifest"].summary
    # a member removed (3 -> 1 wanted while the manifest lists 3) is followed the same way
    cfg1 = load_text(plain.replace("roles: [etcd]}", "roles: [worker]}"))
    fs1 = one_cp_running(cfg1, OLD, tuple(etcd_servers(cfg)), api_server_sans(cfg1), ("192.0.2.21",))
    ch1 = {s.resource: s for s in KubeadmPhase().plan(Context(cfg1, fs1, LocalState(), NOW))
           if isinstance(s, Change) and s.host == "cp1"}
    assert "kube-apiserver manifest" in ch1 and "1 etcd server(s)" in ch1["kube-apiserver manifest"].summary
    # members added and the only listed one removed (cp1 gives up etcd): the API server
    # has no etcd left after the etcd phase, so it restarts first, before anything needs it
    cfg3 = load_text(plain.replace("cp1, address: 192.0.2.21, roles: [control-plane, etcd]",
                                   "cp1, address: 192.0.2.21, roles: [control-plane]")
                     .replace("e3, address: 192.0.2.23, roles: [etcd]", "e3, address: 192.0.2.23, roles: [etcd, worker]")
                     .replace("w1, address: 192.0.2.31, roles: [worker]", "w1, address: 192.0.2.31, roles: [etcd]"))
    fs3 = one_cp_running(cfg3, OLD, ("https://192.0.2.21:2379",), api_server_sans(cfg3), ("192.0.2.21",))
    fs3["e3"] = installed(cfg3, host(cfg3, "e3"))  # a node to join
    order3 = {(h, r): w for w, h, r in _order(build_plan(
        [KubeadmPhase()], Context(cfg3, fs3, LocalState(), NOW)), "kubeadm")}
    assert order3[("cp1", "kube-apiserver manifest")] < order3[("e3", "join")], order3
    # one listed member stays (3 -> 1): the restart waits for the later stage
    order1 = {(h, r): w for w, h, r in _order(build_plan(
        [KubeadmPhase()], Context(cfg1, fs1, LocalState(), NOW)), "kubeadm")}
    assert order1[("cp1", "kube-apiserver manifest")] > order1[("cp1", "kubeadm-config")]
    # converged: nothing
    fs2 = one_cp_running(cfg, OLD, tuple(etcd_servers(cfg)), api_server_sans(cfg), ("192.0.2.21",))
    assert not [s for s in KubeadmPhase().plan(Context(cfg, fs2, LocalState(), NOW)) if isinstance(s, Change)]


def test_server_rewrite_touches_only_the_old_addresses() -> None:
    from homekube.components.cp_config import rewrite_server

    text = f"a:\n    server: {OLD}\n    server: https://10.0.0.9:6443\n"
    assert rewrite_server(text, {OLD}, NEW) == f"a:\n    server: {NEW}\n    server: https://10.0.0.9:6443\n"


def test_the_endpoint_fact_reads_the_cluster_copies() -> None:
    import base64

    cc = base64.b64encode(b"controlPlaneEndpoint: 10.0.0.1:6443\netcd:\n  external:\n    endpoints:\n"
                          b"    - https://10.0.0.1:2379\n").decode()
    f = ep.parse_endpoint_fact(f"server={OLD}\nkubelet={OLD}\nlocal=ok\netcd=https://a:2379,https://b:2379\n"
                               f"config={cc}\nproxy={OLD}\nclusterinfo={NEW}\nsuperadmin={OLD}\n")
    assert f.etcd_servers == ("https://a:2379", "https://b:2379")
    assert f.control_plane_endpoint == "10.0.0.1:6443" and f.config_etcd == ("https://10.0.0.1:2379",)
    assert f.proxy == OLD and f.cluster_info == NEW and f.super_admin == OLD and f.kubelet == OLD
    assert ep.parse_endpoint_fact("config=!!notbase64\n").cluster_config is None
    cmd = ep.endpoint_fact(CFG, CFG.host("cp1")).command
    assert "kubeadm-config" in cmd and "--etcd-servers" in cmd and "cluster-info" in cmd
    assert "kubeadm-config" not in ep.endpoint_fact(CFG, CFG.host("w1")).command


def test_a_conversion_that_cannot_be_done_whole_is_refused() -> None:
    from homekube.components.kubernetes import KubeadmPhase

    fs = one_cp_running(CFG, OLD, ("https://192.0.2.21:2379",), ["192.0.2.21"], ("192.0.2.21",))
    f = fs["cp1"]
    e = f.extra["endpoint"]
    fs["cp1"] = replace(f, extra={**f.extra, "endpoint": replace(e, cluster_config=None)})
    with pytest.raises(RefusedError, match="kubeadm-config ConfigMap could not be read"):
        KubeadmPhase().plan(Context(CFG, fs, LocalState(), NOW))
    from homekube.components.kubernetes import KubeFacts

    kf = f.extra["kubernetes"]
    assert isinstance(kf, KubeFacts)
    fs["cp1"] = replace(f, extra={**f.extra, "kubernetes": replace(kf, kubeadm="v1.35.4")})
    with pytest.raises(RefusedError, match=r"kubeadm on cp1 is v1\.35\.4, not 1\.36"):
        KubeadmPhase().plan(Context(CFG, fs, LocalState(), NOW))
