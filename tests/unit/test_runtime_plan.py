"""The features the real lab cluster needs, planned against synthetic facts (pure), plus the
generated shell for downloads and the runtime facts run for real (bash, curl against loopback).

containerd + runc from release binaries, registries and the image repository, cgroup v1 and the
cgroup driver, flannel, kubelet/kube-proxy settings, pinned patch versions. Validated, not
executed against a cluster here; the lab runs them for real.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from homekube.components import kubernetes as k8s
from homekube.components.artifacts import Artifact, containerd_tarball, runc_binary
from homekube.components.downloads import fetch_verified, install_binaries, stamp_lines, stamped_version
from homekube.components.hostprep import preflight
from homekube.components.k8s_upgrade import KubernetesUpgradePhase
from homekube.components.kubernetes import (
    ADMIN_CONF,
    CA_CRT,
    INIT_CONFIG,
    JOIN_CONFIG,
    KUBELET_CONF,
    KubeFacts,
    kubernetes_phases,
)
from homekube.components.planner import build_plan
from homekube.components.reset import reset_script
from homekube.components.runtime import CONTAINERD_STAMP, RUNC_STAMP, runtime_fact_lines
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.errors import ConfigError
from homekube.facts.host import HostFacts
from homekube.facts.system import PackageState, UnitState
from homekube.plan.model import Act, Change, ChangeKey, NoChange
from homekube.render.kubernetes import PAUSE_VERSIONS, repo_files
from homekube.render.runtime import (
    CONTAINERD_CONFIG,
    CONTAINERD_UNIT,
    CRIO_REGISTRIES,
    containerd_config,
    containerd_unit,
    registry_files,
)
from tests.conftest import TEST_CA_PEM
from tests.unit.test_kubernetes_plan import (  # shared fact builders and the loopback mirror
    OPERATOR,
    bash,
    by_resource,
    changes,
    cluster_ca,
    ctx_of,
    fstate,
    host,
    installed,
    loopback_mirror,
    plan_of,
    running_cp,
    runs,
    steps,
    with_files,
    writes,
    yaml_docs,
)

__all__ = ["loopback_mirror"]  # the fixture, imported for this module's tests

LAB = """\
name: lab
kubernetes:
  version: "1.36.3"
  runtime: containerd
  cgroupDriver: cgroupfs
  allowCgroupV1: true
  containerd: {restrictOomScoreAdj: true, oomScoreAdjust: 0}
  kubeProxy: {conntrackMaxPerCore: 0}
network: {cni: flannel, pods: [10.42.0.0/16], services: [10.96.0.0/16]}
artifacts:
  mirror: http://192.0.2.1:3142/homekube
  imageRepository: 192.0.2.1:5000
  registries:
  - {host: "192.0.2.1:5000", plainHttp: true}
hosts:
- {name: h1, address: 192.0.2.11, roles: [control-plane, etcd, worker]}
- {name: h2, address: 192.0.2.12, roles: [worker]}
"""
CFG = load_text(LAB)
UPSTREAM = load_text(LAB.replace("  mirror: http://192.0.2.1:3142/homekube\n", ""))


def node(cfg: ClusterConfig, name: str, *, cgroup: int = 1) -> HostFacts:
    f = host(cfg, name)
    return replace(f, cgroup=cgroup, extra={"kubernetes": KubeFacts()})


def converged(cfg: ClusterConfig, f: HostFacts, **kube: Any) -> HostFacts:
    """A containerd node on which k8s-packages has run."""
    files = dict(f.files)
    for rf in repo_files(cfg, "debian"):
        files[rf.path] = fstate(rf.path, rf.content.encode())
        assert rf.keyring
        files[rf.keyring] = fstate(rf.keyring, b"\x99key")
    pause = PAUSE_VERSIONS[cfg.kubernetes.minor]
    files[CONTAINERD_CONFIG] = fstate(CONTAINERD_CONFIG, containerd_config(cfg, pause).encode())
    files[CONTAINERD_UNIT] = fstate(CONTAINERD_UNIT, containerd_unit(cfg).encode())
    for path, content in registry_files(cfg):
        files[path] = fstate(path, content.encode())
    v = cfg.kubernetes.version if cfg.kubernetes.version.count(".") == 2 else "1.36.3"
    pkgs = {p: PackageState(p, f"{v}-1.1") for p in ("kubelet", "kubeadm", "kubectl")}
    pkgs["kubernetes-cni"] = PackageState("kubernetes-cni", "1.7.1-1.1")
    units = {u: UnitState(u, "loaded", "active", "enabled")
             for u in ("containerd.service", "kubelet.service")}
    kf = KubeFacts(**{"kubeadm": f"v{v}", "held": frozenset({"kubelet", "kubeadm", "kubectl"}),
                      "containerd": "2.3.7", "runc": "1.5.2", **kube})
    return replace(f, files=files, packages={**f.packages, **pkgs}, units={**f.units, **units},
                   extra={**f.extra, "kubernetes": kf})


def fresh(cfg: ClusterConfig = CFG) -> dict[str, HostFacts]:
    return {h.name: node(cfg, h.name) for h in cfg.hosts}


def nochange_reasons(p: Any, phase: str) -> list[str]:
    return [s.reason for s in steps(p, phase) if isinstance(s, NoChange)]


# ---------------------------------------------------------------------------------------------
# containerd on a fresh node


def test_fresh_containerd_node_installs_binaries_config_unit_and_cni_packages() -> None:
    cs = changes(plan_of(CFG, fresh()), "k8s-packages", "h2")
    res = [c.resource for c in cs]
    assert res == [
        "artifacts", "packages gpg", "keyring /etc/apt/keyrings/kubernetes-apt-keyring.gpg",
        "file /etc/apt/sources.list.d/kubernetes.list", "containerd install", "runc install",
        f"file {CONTAINERD_CONFIG}", f"file {CONTAINERD_UNIT}",
        "file /etc/containerd/certs.d/192.0.2.1:5000/hosts.toml", "packages",
        "unit containerd.service", "unit kubelet.service",
    ]  # fmt: skip
    assert not any("cri-o" in r or "crio" in r for r in res)
    (ctd,) = by_resource(cs, "containerd install")
    script = runs(ctd)[0]
    assert "http://192.0.2.1:3142/homekube/containerd/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz" in script
    assert "http://192.0.2.1:3142/homekube/containerd/v2.3.7/SHA256SUMS" in script
    for b in ("containerd", "containerd-shim-runc-v2", "ctr"):
        assert f'install -m 0755 "$d/bin/{b}" /usr/local/bin/{b}.new && mv -f' in script
    assert CONTAINERD_STAMP in script and "2.3.7" in script
    (runc,) = by_resource(cs, "runc install")
    assert "runc/v1.5.2/runc.amd64" in runs(runc)[0]
    assert '"$d/runc.amd64" /usr/local/sbin/runc.new' in runs(runc)[0]
    (pk,) = by_resource(cs, "packages")
    cmd = runs(pk)[0]
    # 1.36.3 is pinned: kubeadm refuses a kubelet newer than the control plane it builds
    assert "'kubeadm=1.36.3-*' 'kubectl=1.36.3-*' 'kubelet=1.36.3-*' 'kubernetes-cni'" in cmd
    assert "apt-mark hold 'kubelet' 'kubeadm' 'kubectl' >/dev/null" in cmd
    (unit,) = by_resource(cs, "unit containerd.service")
    assert runs(unit)[:2] == ["systemctl daemon-reload", "systemctl enable --now containerd.service"]
    assert "[ -S /run/containerd/containerd.sock ]" in runs(unit)[2]
    assert "grpc[.]v1 +cri" in runs(unit)[2]
    assert all(c.order == k8s.INSTALL for c in cs if c.resource != "artifacts")


def test_artifact_check_names_the_runtime_binaries_and_their_checksums() -> None:
    (art,) = by_resource(changes(plan_of(CFG, fresh()), "k8s-packages", "h1"), "artifacts")
    urls = runs(art)[0]
    for part in ("containerd/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz", "containerd/v2.3.7/SHA256SUMS",
                 "runc/v1.5.2/runc.amd64", "runc/v1.5.2/SHA256SUMS"):
        assert f"http://192.0.2.1:3142/homekube/{part}" in urls
    assert "calico" not in urls  # flannel: nothing to download


def test_upstream_urls_and_pins() -> None:
    art = containerd_tarball(UPSTREAM, "x86_64")
    assert art.url == ("https://github.com/containerd/containerd/releases/download/v2.3.7/"
                       "containerd-2.3.7-linux-amd64.tar.gz")
    assert art.sums_url == art.url + ".sha256sum"
    r = runc_binary(UPSTREAM, "aarch64")
    assert r.url == "https://github.com/opencontainers/runc/releases/download/v1.5.2/runc.arm64"
    assert r.sums_url == "https://github.com/opencontainers/runc/releases/download/v1.5.2/runc.sha256sum"
    pinned = load_text(LAB.replace("oomScoreAdjust: 0}", f"oomScoreAdjust: 0, sha256: {'a' * 64}}}"))
    (ctd,) = by_resource(changes(plan_of(pinned, fresh(pinned)), "k8s-packages", "h2"),
                         "containerd install")
    assert f'= {"a" * 64} ]' in runs(ctd)[0] and "SHA256SUMS" not in runs(ctd)[0]
    assert "pinned SHA-256" in ctd.why


def test_converged_containerd_node_is_nochange_and_drift_restarts_it() -> None:
    facts = {h: converged(CFG, node(CFG, h)) for h in ("h1", "h2")}
    p = plan_of(CFG, facts)
    assert changes(p, "k8s-packages") == []
    reasons = nochange_reasons(p, "k8s-packages")
    assert "containerd 2.3.7 installed in /usr/local/bin" in reasons
    assert "runc 1.5.2 installed as /usr/local/sbin/runc" in reasons
    # config drift: rewrite and restart (containers keep running: KillMode=process)
    drift = with_files(facts["h2"], fstate(CONTAINERD_CONFIG, b"version = 3\n"))
    cs = changes(plan_of(CFG, {**facts, "h2": drift}), "k8s-packages", "h2")
    assert [c.resource for c in cs] == [f"file {CONTAINERD_CONFIG}", "unit containerd.service"]
    assert runs(cs[1])[0] == "systemctl restart containerd.service"
    assert "config.toml changed" in cs[1].why
    # a new containerd release: install, then restart; a new unit: daemon-reload first
    old = replace(facts["h2"], extra={"kubernetes": replace(k8s.kube_facts(facts["h2"]),
                                                              containerd="2.3.6")})
    old = with_files(old, fstate(CONTAINERD_UNIT, b"[Service]\n"))
    cs = changes(plan_of(CFG, {**facts, "h2": old}), "k8s-packages", "h2")
    assert [c.resource for c in cs] == ["artifacts", "containerd install", f"file {CONTAINERD_UNIT}",
                                        "unit containerd.service"]
    assert "containerd-2.3.7-linux-amd64.tar.gz" in runs(cs[0])[0]
    assert cs[1].summary == "upgrade containerd 2.3.6 → 2.3.7"
    assert runs(cs[3])[:2] == ["systemctl daemon-reload", "systemctl restart containerd.service"]


def test_runc_upgrade_does_not_restart_containerd() -> None:
    facts = {h: converged(CFG, node(CFG, h)) for h in ("h1", "h2")}
    old = replace(facts["h2"], extra={"kubernetes": replace(k8s.kube_facts(facts["h2"]), runc="1.5.1")})
    cs = changes(plan_of(CFG, {**facts, "h2": old}), "k8s-packages", "h2")
    assert [c.resource for c in cs] == ["artifacts", "runc install"]
    assert cs[1].summary == "upgrade runc 1.5.1 → 1.5.2"


def test_installed_patch_other_than_pinned_is_a_warning() -> None:
    f = converged(CFG, node(CFG, "h2"))
    f = replace(f, packages={**f.packages, "kubelet": PackageState("kubelet", "1.36.4-1.1")})
    p = plan_of(CFG, {"h1": converged(CFG, node(CFG, "h1")), "h2": f})
    warn = [s for s in steps(p, "k8s-packages") if isinstance(s, NoChange) and s.warning]
    assert [w.reason for w in warn] == [
        "installed kubelet 1.36.4-1.1 but cluster.yaml pins 1.36.3: homekube does not change "
        "patch versions in place (yet)"]


# ---------------------------------------------------------------------------------------------
# kubeadm: the runtime's socket, cgroup v1, the version


def test_kubeadm_configs_carry_the_runtime_and_the_cgroup_v1_opt_in() -> None:
    p = plan_of(CFG, fresh())
    (init,) = by_resource(changes(p, "kubeadm", "h1"), "kubeadm init")
    docs = {d["kind"]: d for d in yaml_docs(writes(init)[INIT_CONFIG].content)}
    reg = docs["InitConfiguration"]["nodeRegistration"]
    assert reg["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert reg["ignorePreflightErrors"] == ["SystemVerification"]
    assert docs["KubeletConfiguration"]["failCgroupV1"] is False
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "cgroupfs"
    assert docs["ClusterConfiguration"]["kubernetesVersion"] == "v1.36.3"
    assert not any("sed -i" in c for c in runs(init))  # a pinned patch needs no rewriting
    (join,) = changes(p, "kubeadm", "h2")
    (jdoc,) = yaml_docs(writes(join)[JOIN_CONFIG].content)
    assert jdoc["nodeRegistration"]["ignorePreflightErrors"] == ["SystemVerification"]
    # the plan says so, once per cgroup v1 node
    warn = [s for s in steps(p, "kubeadm") if isinstance(s, NoChange) and s.warning]
    assert [(w.host, w.resource) for w in warn] == [("h1", "cgroup v1"), ("h2", "cgroup v1")]
    assert "failCgroupV1: false" in warn[0].reason
    v2 = {h: node(CFG, h, cgroup=2) for h in ("h1", "h2")}
    assert not [s for s in steps(plan_of(CFG, v2), "kubeadm") if isinstance(s, NoChange) and s.warning]


def test_cgroup_v1_is_refused_unless_allowed_and_check_warns() -> None:
    f = node(CFG, "h1")
    (finding,) = [x for x in preflight(CFG, CFG.host("h1"), f) if "cgroup" in x.message]
    assert not finding.fatal and "kubernetes.allowCgroupV1" in finding.message
    strict = load_text(LAB.replace("  allowCgroupV1: true\n", ""))
    (finding,) = [x for x in preflight(strict, strict.host("h1"), f) if "cgroup" in x.message]
    assert finding.fatal and "allowCgroupV1" in finding.message
    assert not [x for x in preflight(CFG, CFG.host("h1"), replace(f, cgroup=2)) if "cgroup" in x.message]


def test_minor_only_version_is_set_from_the_installed_kubeadm_and_checked() -> None:
    cfg = load_text(LAB.replace('version: "1.36.3"', 'version: "1.36"'))
    (init,) = by_resource(changes(plan_of(cfg, fresh(cfg)), "kubeadm", "h1"), "kubeadm init")
    (fix,) = [c for c in runs(init) if "sed -i" in c]
    assert 'case "$v" in v1.36.*)' in fix
    assert f'grep -qx "kubernetesVersion: $v" {INIT_CONFIG}' in fix
    assert init.diff and "is a placeholder: apply sets the installed kubeadm's exact version" in init.diff


def test_the_version_fix_runs_for_real(tmp_path: Path) -> None:
    cfg = load_text(LAB.replace('version: "1.36.3"', 'version: "1.36"'))
    (init,) = by_resource(changes(plan_of(cfg, fresh(cfg)), "kubeadm", "h1"), "kubeadm init")
    (fix,) = [c for c in runs(init) if "sed -i" in c]
    conf = tmp_path / "init.yaml"
    conf.write_text(writes(init)[INIT_CONFIG].content.decode())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubeadm"  # stands in for `kubeadm version -o short`
    for version, ok in (("v1.36.7", True), ("v1.37.0", False)):
        fake.write_text(f"#!/bin/sh\necho {version}\n")
        fake.chmod(0o755)
        res = subprocess.run(["bash", "-c", "set -euo pipefail\n" + fix.replace(INIT_CONFIG, str(conf))],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        assert (res.returncode == 0) == ok, res.stderr
    assert "kubernetesVersion: v1.36.7\n" in conf.read_text()
    assert "stable-1.36" not in conf.read_text().split("---", 1)[1]


# ---------------------------------------------------------------------------------------------
# flannel


def running(cfg: ClusterConfig, **kube: Any) -> dict[str, HostFacts]:
    ca_pem, _ = cluster_ca()
    cp = running_cp(cfg, "h1", ca_pem, **kube)
    cp = converged(cfg, cp, readyz="ok", **kube)
    w = with_files(converged(cfg, node(cfg, "h2")), fstate(KUBELET_CONF, b"", 0o600))
    return {"h1": cp, "h2": w}


def test_fresh_cluster_gets_flannel_and_calico_says_why_not() -> None:
    facts = running(CFG, flannel=None)
    p = plan_of(CFG, facts)
    assert changes(p, "calico") == []
    assert nochange_reasons(p, "calico") == ["network.cni is flannel"]
    (fl,) = changes(p, "flannel")
    assert fl.host == "h1"
    cmds = runs(fl)
    assert cmds[0] == (f"kubectl --kubeconfig={ADMIN_CONF} apply --server-side "
                       "--field-manager=homekube -f /etc/kubernetes/homekube/cluster/flannel.yaml")
    assert "rollout status daemonset/kube-flannel-ds --timeout=300s" in cmds[1]
    objs = yaml_docs(writes(fl)["/etc/kubernetes/homekube/cluster/flannel.yaml"].content)
    assert objs[-1]["kind"] == "DaemonSet"
    assert objs[-1]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "192.0.2.1:5000/flannel-io/flannel:v0.28.10")


def test_running_flannel_is_nochange_and_unready_pods_are_waited_for() -> None:
    files = dict(k8s.cluster_files(CFG))
    facts = running(CFG, flannel=(2, 2), headlamp=True, bindings=frozenset({"headlamp-view"}))
    facts["h1"] = with_files(facts["h1"], *(fstate(p, c) for p, c in files.items()))
    p = plan_of(CFG, facts)
    assert changes(p, "flannel") == []
    assert "flannel runs on 2 of 2 node(s)" in nochange_reasons(p, "flannel")
    facts["h1"] = replace(facts["h1"], extra={"kubernetes": replace(
        k8s.kube_facts(facts["h1"]), flannel=(1, 2))})
    (wait,) = changes(plan_of(CFG, facts), "flannel")
    assert wait.resource == "flannel ready" and "1 of 2 flannel pods are ready" in wait.why


def test_calico_cluster_has_no_flannel_and_the_fact_asks_only_its_cni() -> None:
    calico = load_text(LAB.replace("cni: flannel, ", ""))
    p = plan_of(calico, running(calico))
    assert changes(p, "flannel") == []
    assert nochange_reasons(p, "flannel") == ["network.cni is calico"]
    assert "tigera" in k8s.kube_fact(calico).command and "flannel" not in k8s.kube_fact(calico).command
    assert "kube-flannel-ds" in k8s.kube_fact(CFG).command and "tigera" not in k8s.kube_fact(CFG).command


def test_flannel_bindings_do_not_count_as_headlamp() -> None:
    cfg = load_text(LAB + "ui: {kind: none}\n")
    facts = running(cfg, flannel=(2, 2), bindings=frozenset({"flannel"}))
    assert changes(plan_of(cfg, facts), "ui") == []


def test_flannel_needs_room_for_every_node() -> None:
    with pytest.raises(ConfigError, match="holds 1 node network"):
        load_text(LAB.replace("pods: [10.42.0.0/16]", "pods: [10.42.0.0/24]"))
    with pytest.raises(ConfigError, match="between /48 and /64"):
        load_text(LAB.replace("pods: [10.42.0.0/16], services: [10.96.0.0/16]",
                              'pods: ["fd42::/40"], services: ["fd96::/112"]'))


# ---------------------------------------------------------------------------------------------
# image repository and registries


def test_tigera_operator_comes_from_the_image_repository() -> None:
    calico = load_text(LAB.replace("cni: flannel, ", ""))
    p = plan_of(calico, running(calico, crd=True, operator_image=None))
    (op,) = by_resource(changes(p, "calico"), "tigera operator")
    assert runs(op)[0] == (
        "sed -E 's#(image: *\"?)quay\\.io/#\\1192.0.2.1:5000/#' "
        "/etc/kubernetes/homekube/calico/v3.32.1/tigera-operator.yaml | "
        f"kubectl --kubeconfig={ADMIN_CONF} apply --server-side --field-manager=homekube "
        "--force-conflicts -f - >/dev/null")
    # an operator still pulled from quay.io is re-applied
    facts = running(calico, crd=True, operator_image=OPERATOR, installation=True,
                    calico_available=True)
    (op,) = by_resource(changes(plan_of(calico, facts), "calico"), "tigera operator")
    assert op.why == f"the operator runs {OPERATOR}, cluster.yaml wants 192.0.2.1:5000/tigera/operator"


def test_the_operator_rewrite_runs_for_real(tmp_path: Path) -> None:
    calico = load_text(LAB.replace("cni: flannel, ", ""))
    (op,) = by_resource(changes(plan_of(calico, running(calico, crd=True)), "calico"),
                        "tigera operator")
    sed = runs(op)[0].split(" | ")[0]
    manifest = tmp_path / "op.yaml"
    manifest.write_text('      containers:\n        - name: tigera-operator\n'
                        '          image: quay.io/tigera/operator:v1.42.3\n'
                        '          image: "quay.io/tigera/operator:v1.42.3"\n'
                        '            - name: X\n              value: quay.io/keep\n')
    out = bash(sed.replace("/etc/kubernetes/homekube/calico/v3.32.1/tigera-operator.yaml",
                           str(manifest))).stdout
    assert out.count("image: 192.0.2.1:5000/tigera/operator:v1.42.3") == 1
    assert 'image: "192.0.2.1:5000/tigera/operator:v1.42.3"' in out
    assert "value: quay.io/keep" in out


def test_cri_o_registries_are_written_and_restart_cri_o() -> None:
    text = LAB.replace("  runtime: containerd\n", "").replace(
        '  - {host: "192.0.2.1:5000", plainHttp: true}\n',
        '  - {host: "192.0.2.1:5000", plainHttp: true}\n  - host: registry.home.arpa\n'
        "    ca: |\n" + "".join(f"      {ln}\n" for ln in TEST_CA_PEM.splitlines()))
    cfg = load_text(text)
    f = installed(cfg, node(cfg, "h2", cgroup=2))
    p = plan_of(cfg, {"h1": installed(cfg, node(cfg, "h1", cgroup=2)), "h2": f})
    cs = changes(p, "k8s-packages", "h2")
    res = [c.resource for c in cs]
    assert res[:2] == [f"file {CRIO_REGISTRIES}", "file /etc/containers/certs.d/registry.home.arpa/ca.crt"]
    assert res[-1] == "unit crio.service" and "the registries drop-in changed" in cs[-1].why
    assert writes(cs[1])["/etc/containers/certs.d/registry.home.arpa/ca.crt"].content == TEST_CA_PEM.encode()
    # the restart follows the file's identity, not its display text
    assert cs[0].key == ChangeKey("file", CRIO_REGISTRIES, Act.CREATE)


def test_ca_file_is_read_at_load_time_relative_to_cluster_yaml(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text(TEST_CA_PEM)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(LAB.replace('plainHttp: true}', 'caFile: ca.pem}'))
    from homekube.config.loader import load

    cfg = load(cluster)
    (reg,) = cfg.artifacts.registries
    assert reg.ca == TEST_CA_PEM and reg.ca_file is None
    assert dict(registry_files(cfg))["/etc/containerd/certs.d/192.0.2.1:5000/ca.crt"] == TEST_CA_PEM
    cluster.write_text(LAB.replace('plainHttp: true}', 'caFile: missing.pem}'))
    with pytest.raises(ConfigError) as e:
        load(cluster)
    (problem,) = e.value.problems
    assert problem.path == "artifacts.registries[0].caFile" and "file not found" in problem.message
    assert problem.line == 14  # the registry's line in LAB
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    cluster.write_text(LAB.replace('plainHttp: true}', 'caFile: bad.pem}'))
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        load(cluster)


@pytest.mark.parametrize(("snippet", "message"), [
    ("imageRepository: https://r.example/x", "not a registry"),
    ("imageRepository: r.example/X", "not a registry"),
    ("registries: [{host: 'http://r:5000'}]", "not a registry host"),
    ("registries: [{host: r, plainHttp: true, skipVerify: true}]", "plainHttp uses no TLS"),
    ("registries: [{host: r}, {host: r}]", "listed twice"),
    ("registries: [{host: r, ca: nope}]", "not a PEM certificate"),
])
def test_bad_registry_settings_are_config_errors(snippet: str, message: str) -> None:
    text = re.sub(r"artifacts:\n(  .*\n)+", f"artifacts:\n  {snippet}\n", LAB)
    with pytest.raises(ConfigError, match=message):
        load_text(text)


def test_old_containerd_is_refused_for_the_minor() -> None:
    with pytest.raises(ConfigError, match=r"containerd 2\.1\.5 is older than Kubernetes 1\.36 supports"):
        load_text(LAB.replace("oomScoreAdjust: 0}", "oomScoreAdjust: 0, version: 2.1.5}"))


# ---------------------------------------------------------------------------------------------
# upgrades and reset


def test_minor_upgrade_with_containerd_moves_only_the_kubelet_packages() -> None:
    cfg = load_text(LAB.replace('version: "1.36.3"', 'version: "1.37.1"'))
    old = running(CFG, flannel=(2, 2))
    p = build_plan([KubernetesUpgradePhase()], ctx_of(cfg, old))
    (kubelet,) = [c for c in changes(p, "k8s-upgrade", "h2") if c.resource == "kubelet"]
    cmd = " ".join(runs(kubelet))
    assert "'kubectl=1.37.1-*' 'kubelet=1.37.1-*'" in cmd and "cri-o" not in cmd
    assert "systemctl restart kubelet" in cmd and "crio" not in cmd


def test_reset_removes_containerd_only_when_homekube_installed_it() -> None:
    script = reset_script(CFG, node(CFG, "h1"))
    line = next(ln for ln in script.splitlines() if "containerd-binary" in ln)
    assert line.startswith(f"if test -e {CONTAINERD_STAMP}; then systemctl disable --now containerd")
    assert "/var/lib/containerd" in line and "/usr/local/sbin/runc" in line
    assert script.index("kubeadm reset") < script.index(CONTAINERD_STAMP)  # CRI still there
    assert "flannel.1" in script and "FLANNEL-" in script


# ---------------------------------------------------------------------------------------------
# the shell, for real


def _served(root: Path, rel: str, data: bytes) -> str:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_download_verify_install_and_stamp_run_for_real(
    loopback_mirror: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = loopback_mirror
    digest = _served(root, "runc/v1.5.2/runc.amd64", b"#!/bin/sh\necho 'runc version 1.5.2'\n")
    (root / "runc/v1.5.2/SHA256SUMS").write_text(f"{'0' * 64}  other\n{digest} *runc.amd64\n")
    dest, stamp = tmp_path / "sbin" / "runc", tmp_path / "state" / "runc-binary"
    dest.parent.mkdir()
    art = Artifact(f"{base}runc/v1.5.2/runc.amd64", f"{base}runc/v1.5.2/SHA256SUMS", "runc.amd64", None)

    def script(a: Artifact) -> str:
        return "\n".join(["d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT", *fetch_verified(a),
                          *install_binaries([(f'"$d/{a.filename}"', str(dest))]),
                          *stamp_lines(str(dest), "1.5.2", str(stamp))])

    res = bash(script(art))
    assert res.returncode == 0, res.stderr
    assert dest.stat().st_mode & 0o777 == 0o755
    fact = stamped_version("runc", str(dest), str(stamp), "\"$b\" --version | awk 'NR==1{print $3}'")
    assert bash(fact).stdout == "runc=1.5.2\n"
    stamp.write_text("1 2 3 9.9.9\n")  # a stamp of another file: the binary is asked instead
    assert bash(fact).stdout == "runc=1.5.2\n"
    assert bash(fact.replace(str(dest), str(tmp_path / "none"))).stdout == ""
    # a tampered file, a wrong pin, an unlisted file: exit 1, nothing installed
    dest.unlink()
    _served(root, "runc/v1.5.2/runc.amd64", b"tampered")
    res = bash(script(art))
    assert res.returncode == 1 and f"runc.amd64 is not in {art.sums_url} or does not match it" in res.stderr
    res = bash(script(replace(art, sha256="f" * 64)))
    assert res.returncode == 1 and "checksum mismatch for runc.amd64" in res.stderr
    (root / "runc/v1.5.2/SHA256SUMS").write_text(f"{digest}  runc.arm64\n")
    assert bash(script(art)).returncode == 1
    assert not dest.exists()


def test_runtime_fact_lines_run_on_a_host_without_containerd() -> None:
    lines = runtime_fact_lines(CFG)
    assert len(lines) == 2 and RUNC_STAMP in lines[1]
    res = bash("\n".join(lines))
    assert res.returncode == 0 and res.stdout == ""
    assert runtime_fact_lines(load_text(LAB.replace("  runtime: containerd\n", ""))) == []


def test_every_phase_plans_without_a_crash_for_the_lab_config() -> None:
    p = build_plan(kubernetes_phases(), ctx_of(CFG, fresh()))
    kinds = {type(s) for ph in p.phases for s in ph.steps}
    assert Change in kinds and NoChange in kinds
    assert all(isinstance(s, Change | NoChange) for ph in p.phases for s in ph.steps)
    assert CA_CRT in {w for c in changes(p, "kubeadm", "h1") for w in writes(c)}


def test_user_settings_reach_kubeadm_kubelet_and_flannel() -> None:
    cfg = load_text(LAB.replace("  allowCgroupV1: true\n", "  allowCgroupV1: true\n"
                                "  ignorePreflightErrors: [Mem, SystemVerification]\n"
                                "  kubelet: {resolvConf: /run/systemd/resolve/resolv.conf}\n")
                    .replace("cni: flannel, ", "cni: flannel, flannelIface: eth1, "))
    p = plan_of(cfg, fresh(cfg))
    (init,) = by_resource(changes(p, "kubeadm", "h1"), "kubeadm init")
    docs = {d["kind"]: d for d in yaml_docs(writes(init)[INIT_CONFIG].content)}
    assert docs["InitConfiguration"]["nodeRegistration"]["ignorePreflightErrors"] == [
        "SystemVerification", "Mem"]
    assert docs["KubeletConfiguration"]["resolvConf"] == "/run/systemd/resolve/resolv.conf"
    (join,) = changes(p, "kubeadm", "h2")
    assert yaml_docs(writes(join)[JOIN_CONFIG].content)[0]["nodeRegistration"][
        "ignorePreflightErrors"] == ["SystemVerification", "Mem"]
    ds = k8s.cluster_files(cfg)[0][1].decode()
    assert "- --iface=eth1\n" in ds
    for bad, message in (("ignorePreflightErrors: [all]", "name the checks"),
                         ("kubelet: {resolvConf: resolv.conf}", "not an absolute path")):
        with pytest.raises(ConfigError, match=message):
            load_text(LAB.replace("  allowCgroupV1: true\n", f"  allowCgroupV1: true\n  {bad}\n"))


def test_config_warnings_for_cgroup_v1_combinations() -> None:
    from homekube.config.loader import warnings_for

    crio = load_text(LAB.replace("  runtime: containerd\n", "") + "hostPrep: {swap: allowed}\n")
    msgs = {w.path: w.message for w in warnings_for(crio)}
    assert "cri-o no longer tests cgroup v1" in msgs["kubernetes.allowCgroupV1"]
    assert "LimitedSwap needs cgroup v2" in msgs["hostPrep.swap"]
    assert warnings_for(CFG) == []
