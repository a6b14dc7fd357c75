"""Kubernetes minor upgrades planned against synthetic facts (pure).

Validated, not executed: no kubeadm, kubelet or CRI-O can run here; these tests check the
order (waves), the commands and the refusals of the k8s-upgrade phase, and that k8s-packages
and kubeadm leave hosts being upgraded alone.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from dataclasses import replace

import pytest
from rich.console import Console

from homekube.cli.output import print_plan
from homekube.components import etcd
from homekube.components.k8s_upgrade import KubernetesUpgradePhase
from homekube.components.kubernetes import kube_fact, kubernetes_phases, parse_kube_fact
from homekube.components.planner import build_plan
from homekube.components.registry import phase_names
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.errors import RefusedError
from homekube.etcd import layout as etcd_layout
from homekube.etcd import membership as etcd_membership
from homekube.etcd import shell as etcd_shell
from homekube.facts.host import HostFacts
from homekube.facts.system import PackageState
from homekube.plan.model import Change, NoChange, Plan, Run, WriteFile
from homekube.render.kubernetes import CRIO_DROPIN_PATH, REDACTED_TOKEN, crio_dropin
from homekube.render.runtime import CONTAINERD_CONFIG
from tests.unit.test_kubernetes_plan import (
    HA,
    TOKEN_RE,
    cluster_ca,
    ctx_of,
    host,
    joined,
    running_cp,
)
from tests.unit.waves import wave_of

SMALL = """\
name: up
kubernetes: {version: "1.36"}
network: {pods: [10.42.0.0/16], services: [10.96.0.0/16]}
hosts:
  - {name: cp1, address: 192.0.2.21, roles: [control-plane, etcd]}
  - {name: w1, address: 192.0.2.31, roles: [worker]}
  - {name: w2, address: 192.0.2.32, roles: [worker]}
"""
PHASE = "k8s-upgrade"


def cfg_at(text: str, version: str) -> ClusterConfig:
    return load_text(text.replace('version: "1.36"', f'version: "{version}"'))


def cluster_at(text: str, version: str) -> dict[str, HostFacts]:
    """A running cluster converged at `version` (packages, repositories, drop-in of its minor)."""
    cfg = cfg_at(text, version)
    ca, _ = cluster_ca()
    first = cfg.control_planes[0].name
    out: dict[str, HostFacts] = {}
    for h in cfg.hosts:
        f = running_cp(cfg, h.name, ca) if h.name == first else joined(cfg, h.name)
        pkgs = {p: PackageState(p, f"{version}.4-1.1") for p in ("cri-o", "kubelet", "kubeadm", "kubectl")}
        out[h.name] = replace(f, packages={**f.packages, **pkgs})
    return out


def plan_of(cfg: ClusterConfig, facts: dict[str, HostFacts]) -> Plan:
    return build_plan([KubernetesUpgradePhase(), *kubernetes_phases()], ctx_of(cfg, facts))


def changes(p: Plan, phase: str = PHASE) -> list[Change]:
    return [c for ph in p.phases if ph.name == phase for c in ph.changes]


def packages(p: Plan) -> list[Change]:
    """k8s-packages changes, minus the artifact check of the Calico manifests (which these
    synthetic facts do not have on the first control plane)."""
    return [c for c in changes(p, "k8s-packages") if c.resource != "artifacts"]


def order(p: Plan) -> list[tuple[int, str, str]]:
    wave = wave_of(changes(p))
    return sorted((wave(c), c.host, c.resource) for c in changes(p))


def runs(c: Change) -> str:
    return "\n".join(a.command for a in c.actions if isinstance(a, Run))


def test_one_minor_with_one_control_plane_and_two_workers_in_waves() -> None:
    cfg = cfg_at(SMALL, "1.36")
    p = plan_of(cfg, cluster_at(SMALL, "1.35"))
    assert order(p) == [
        (0, "cp1", "repositories"), (0, "w1", "repositories"), (0, "w2", "repositories"),
        (1, "cp1", "kubeadm upgrade apply"),
        (2, "cp1", "drain cp1"), (3, "cp1", "kubelet"), (4, "cp1", "uncordon cp1"),
        (5, "cp1", "drain w1"), (6, "w1", "kubelet"), (7, "cp1", "uncordon w1"),
        (8, "cp1", "drain w2"), (9, "w2", "kubelet"), (10, "cp1", "uncordon w2"),
    ]
    # per host, the summaries come in the safe order
    w1 = [c.summary for c in sorted(changes(p), key=wave_of(changes(p))) if c.host == "w1"]
    assert w1 == ["switch the Kubernetes and CRI-O repositories to v1.36",
                  "install kubelet, kubectl and cri-o 1.36, restart crio and kubelet"]

    by = {(c.host, c.resource): c for c in changes(p)}
    repos = by["w1", "repositories"]
    files = {a.path: a.content.decode() for a in repos.actions if isinstance(a, WriteFile)}
    assert "https://pkgs.k8s.io/core:/stable:/v1.36/deb/" in files["/etc/apt/sources.list.d/kubernetes.list"]
    assert "isv:/cri-o:/stable:/v1.36/deb/" in files["/etc/apt/sources.list.d/cri-o.list"]
    assert "1.35 → 1.36" in repos.why

    up = runs(by["cp1", "kubeadm upgrade apply"])
    assert "apt-mark unhold 'kubeadm'" in up
    assert "'kubeadm=1.36.*'" in up and "apt-mark hold" in up
    assert "v=$(kubeadm version -o short)" in up  # only the minor is configured
    assert up.index('kubeadm upgrade plan "$v"') < up.index('kubeadm upgrade apply -y "$v"')

    cp_kubelet = runs(by["cp1", "kubelet"])
    assert "kubeadm upgrade node" not in cp_kubelet  # the control plane did it already
    wk = by["w1", "kubelet"]
    text = runs(wk)
    assert text.index("kubeadm upgrade node") < text.index("'kubelet=1.36.*'")
    assert "'cri-o=1.36.*'" in text and "'kubectl=1.36.*'" in text
    assert "apt-mark hold" in text.split("'kubelet=1.36.*'")[1]  # held again after the install
    assert text.rstrip().endswith("systemctl daemon-reload && systemctl restart crio kubelet")
    dropin = {a.path: a for a in wk.actions if isinstance(a, WriteFile)}[CRIO_DROPIN_PATH]
    assert dropin.content == crio_dropin(cfg).encode()
    assert "drain 'w1' --ignore-daemonsets" in runs(by["cp1", "drain w1"])
    assert "uncordon 'w1'" in runs(by["cp1", "uncordon w1"])

    # k8s-packages does not fight it (no repo/drop-in/crio restart of its own), kubeadm is quiet
    assert packages(p) == []
    pk = [s for ph in p.phases if ph.name == "k8s-packages" for s in ph.steps]
    assert {s.host for s in pk if isinstance(s, NoChange) and "k8s-upgrade" in s.reason} == {"cp1", "w1", "w2"}
    assert not any(isinstance(s, NoChange) and s.warning for ph in p.phases for s in ph.steps)
    assert changes(p, "kubeadm") == []


def test_a_configured_patch_is_pinned() -> None:
    p = plan_of(cfg_at(SMALL, "1.36.4"), cluster_at(SMALL, "1.35"))
    by = {(c.host, c.resource): c for c in changes(p)}
    assert "v=v1.36.4" in runs(by["cp1", "kubeadm upgrade apply"])
    assert "'kubeadm=1.36.4-*'" in runs(by["cp1", "kubeadm upgrade apply"])
    text = runs(by["w2", "kubelet"])
    assert "'kubelet=1.36.4-*'" in text and "'cri-o=1.36.*'" in text  # CRI-O: minor only


def test_three_control_planes_upgrade_one_at_a_time() -> None:
    p = plan_of(cfg_at(HA, "1.36"), cluster_at(HA, "1.35"))
    wave = wave_of(changes(p))
    cps = [(wave(c), c.host, c.resource) for c in changes(p) if c.resource.startswith("kubeadm upgrade")]
    assert sorted(cps) == [(1, "cp1", "kubeadm upgrade apply"), (2, "cp2", "kubeadm upgrade node"),
                           (3, "cp3", "kubeadm upgrade node")]
    waves = p.phases[[ph.name for ph in p.phases].index(PHASE)].waves
    assert all(len({c.host for c in w}) == 1 for w in waves[1:])  # one host at a time after the repos
    kubelets = sorted((wave(c), c.host) for c in changes(p) if c.resource == "kubelet")
    assert [h for _, h in kubelets] == ["cp1", "cp2", "cp3", "w1"]
    assert min(w for w, _ in kubelets) > 3  # kubelets only after every control plane
    for w, h in kubelets:
        assert (w - 1, "cp1", f"drain {h}") in order(p) and (w + 1, "cp1", f"uncordon {h}") in order(p)


def test_two_minors_are_refused_before_anything() -> None:
    with pytest.raises(RefusedError) as e:
        plan_of(cfg_at(SMALL, "1.36"), cluster_at(SMALL, "1.34"))
    msg = str(e.value)
    assert "Kubernetes 1.34 → 1.36 skips a minor" in msg and "next: 1.35" in msg
    assert "nothing was changed" in msg and {"cp1", "w1", "w2"} <= set(re.findall(r"(\w+): Kub", msg))
    assert e.value.hint and "one minor at a time" in e.value.hint


def test_downgrade_is_refused() -> None:
    with pytest.raises(RefusedError, match=r"cp1: Kubernetes 1.36 → 1.35 is a downgrade"):
        plan_of(cfg_at(SMALL, "1.35"), cluster_at(SMALL, "1.36"))


def test_same_minor_is_nochange_and_plan_after_apply_is_empty() -> None:
    cfg = cfg_at(SMALL, "1.36")
    p = plan_of(cfg, cluster_at(SMALL, "1.36"))  # also: the state after the upgrade's apply
    assert changes(p) == [] and packages(p) == [] and changes(p, "kubeadm") == []
    steps = [s for ph in p.phases if ph.name == PHASE for s in ph.steps]
    assert [(s.host, isinstance(s, NoChange) and "1.36 installed" in s.reason) for s in steps] == [
        ("cp1", True), ("w1", True), ("w2", True)]
    # a fresh cluster is not an upgrade either
    fresh = {h.name: host(cfg, h.name) for h in cfg.hosts}
    assert changes(plan_of(cfg, fresh)) == []


def test_plan_text_has_no_secret_even_with_a_node_joining() -> None:
    text = SMALL + "  - {name: w3, address: 192.0.2.33, roles: [worker]}\n"
    cfg = cfg_at(text, "1.36")
    facts = cluster_at(text, "1.35")
    facts["w3"] = host(cfg, "w3")  # new: installed with 1.36 by k8s-packages, joins via kubeadm
    p = plan_of(cfg, facts)
    assert "w3" not in {c.host for c in changes(p)}
    secrets = {t for c in p.changes for a in c.actions if isinstance(a, WriteFile) and a.secret
               for t in TOKEN_RE.findall(a.content.decode())} - {REDACTED_TOKEN}
    assert secrets  # the join token exists (kubeadm phase) ...
    buf = io.StringIO()
    print_plan(Console(file=buf, width=200), p, verbose=True)
    shown = buf.getvalue() + json.dumps(p.to_json())
    assert "kubeadm upgrade apply" in shown
    for s in secrets:  # ... and is shown nowhere
        assert s not in shown
    up = changes(p)
    assert not any(a.secret for c in up for a in c.actions if isinstance(a, Run | WriteFile))
    assert not TOKEN_RE.search(json.dumps([c.to_json() for c in up]))


def test_etcd_moves_first_to_the_version_matched_to_the_new_minor() -> None:
    names = phase_names()
    assert names.index("etcd") < names.index(PHASE) < names.index("k8s-packages") < names.index("kubeadm")
    cfg = cfg_at(SMALL, "1.37")
    assert cfg.etcd.version is None and cfg.etcd_version == "3.7.1"
    f = host(cfg, "cp1")
    ef = etcd_shell.EtcdHostFacts(True, {etcd_layout.TARBALL_BIN: "3.6.14"}, True, None, None)
    step = etcd._install(cfg, replace(f, extra={**f.extra, "etcd": ef}))
    assert isinstance(step, Change) and step.summary == "upgrade etcd 3.6.14 → 3.7.1"
    assert etcd_membership.version_gate("3.6.14", cfg.etcd_version) is None
    assert etcd_membership.version_gate("3.6.6", cfg.etcd_version)  # below 3.6.11: the etcd gate refuses
    # 1.35 → 1.36 keeps etcd where it is
    assert cfg_at(SMALL, "1.35").etcd_version == cfg_at(SMALL, "1.36").etcd_version == "3.6.14"


def _with_kube(f: HostFacts, **kube: object) -> HostFacts:
    kf = replace(f.extra["kubernetes"], **kube)
    return replace(f, extra={**f.extra, "kubernetes": kf})


def test_an_unhealthy_node_is_refused_before_anything() -> None:
    facts = cluster_at(SMALL, "1.35")
    facts["cp1"] = _with_kube(facts["cp1"], node_ready={"cp1": "True", "w1": "True",
                                                        "w2": "Unknown"})
    with pytest.raises(RefusedError) as e:
        plan_of(cfg_at(SMALL, "1.36"), facts)
    msg = str(e.value)
    assert "not healthy enough to upgrade to Kubernetes 1.36; nothing was changed" in msg
    assert "node w2 is not Ready (Ready=Unknown)" in msg and "w1" not in msg
    assert e.value.hint and "homekube status" in e.value.hint
    # all Ready: planned
    facts["cp1"] = _with_kube(facts["cp1"], node_ready={"cp1": "True", "w1": "True",
                                                        "w2": "True"})
    assert changes(plan_of(cfg_at(SMALL, "1.36"), facts))


def test_an_etcd_member_that_does_not_answer_is_refused() -> None:
    facts = cluster_at(SMALL, "1.35")
    down = etcd_shell.EtcdHostFacts(True, {etcd_layout.TARBALL_BIN: "3.6.14"}, True, None, None)
    facts["cp1"] = replace(facts["cp1"], extra={**facts["cp1"].extra, "etcd": down})
    with pytest.raises(RefusedError, match=r"cp1: etcd does not answer"):
        plan_of(cfg_at(SMALL, "1.36"), facts)


def test_an_upgrade_under_way_is_not_refused_for_a_node_it_is_replacing() -> None:
    """Once the first control plane has the new kubeadm, a NotReady node (its kubelet being
    replaced when an earlier apply stopped) must not strand the upgrade half done."""
    facts = cluster_at(SMALL, "1.35")
    cp1 = facts["cp1"]
    cp1 = replace(cp1, packages={**cp1.packages, "kubeadm": PackageState("kubeadm", "1.36.4-1.1")})
    facts["cp1"] = _with_kube(cp1, node_ready={"cp1": "True", "w1": "False", "w2": "True"})
    p = plan_of(cfg_at(SMALL, "1.36"), facts)
    assert {c.host for c in changes(p) if c.resource == "kubelet"} == {"cp1", "w1", "w2"}


def test_containerd_gets_the_new_minors_pause_image_with_the_kubelet() -> None:
    """kubeadm 1.36 pins pause 3.10.2 (1.35: 3.10.1): containerd's config.toml moves in the
    kubelet step of each drained node, so the apply after the upgrade has nothing left to do."""
    text = SMALL.replace('kubernetes: {version: "1.36"}',
                         'kubernetes: {version: "1.36", runtime: containerd}')
    p = plan_of(cfg_at(text, "1.36"), cluster_at(text, "1.35"))
    kubelets = [c for c in changes(p) if c.resource == "kubelet"]
    assert {c.host for c in kubelets} == {"cp1", "w1", "w2"}
    for c in kubelets:
        conf = [a for a in c.actions if isinstance(a, WriteFile) and a.path == CONTAINERD_CONFIG]
        assert len(conf) == 1 and b'sandbox = "registry.k8s.io/pause:3.10.2"' in conf[0].content
        cmds = runs(c)
        assert cmds.index("systemctl restart containerd") < cmds.index("systemctl restart kubelet")
        assert "pause 3.10.2" in c.summary
    # 1.36 → 1.37 keeps pause 3.10.2: containerd is left alone
    p = plan_of(cfg_at(text, "1.37"), cluster_at(text, "1.36"))
    for c in (c for c in changes(p) if c.resource == "kubelet"):
        assert "containerd" not in runs(c) and not any(
            isinstance(a, WriteFile) and a.path == CONTAINERD_CONFIG for a in c.actions)


def test_upgrade_commands_ignore_the_preflight_checks_init_ignored() -> None:
    """With allowCgroupV1, kubeadm init/join skip SystemVerification; `kubeadm upgrade plan`,
    `apply` and `node` run the same check and fail on cgroup v1 unless told too (seen on the
    lab's real 1.35 → 1.36 upgrade)."""
    text = SMALL.replace('kubernetes: {version: "1.36"}',
                         'kubernetes: {version: "1.36", allowCgroupV1: true}')
    p = plan_of(cfg_at(text, "1.36"), cluster_at(text, "1.35"))
    kubeadm = [line for c in changes(p) for line in runs(c).splitlines()
               if re.search(r"^if ! kubeadm upgrade (plan|apply|node)", line)]
    assert len(kubeadm) == 4  # plan + apply on cp1, node on w1 and w2
    assert all("--ignore-preflight-errors='SystemVerification'" in line for line in kubeadm), kubeadm
    plain = plan_of(cfg_at(SMALL, "1.36"), cluster_at(SMALL, "1.35"))
    assert "--ignore-preflight-errors" not in "\n".join(runs(c) for c in changes(plain))


def test_clients_of_an_api_the_new_minor_removes_are_refused() -> None:
    metric = ("group=flowcontrol.apiserver.k8s.io,removed_release=1.36,resource=flowschemas,"
              "subresource=,version=v1beta9 group=,removed_release=,resource=componentstatuses,"
              "subresource=,version=v1 group=apps,removed_release=1.38,resource=things,"
              "subresource=,version=v1beta1")
    kf = parse_kube_fact(f"readyz=ok\ndeprecated={metric}\n")
    assert [(d.name, d.removed_release) for d in kf.deprecated] == [
        ("flowschemas.v1beta9.flowcontrol.apiserver.k8s.io", "1.36"),
        ("things.v1beta1.apps", "1.38")]  # componentstatuses: deprecated, no removal planned
    facts = cluster_at(SMALL, "1.35")
    facts["cp1"] = _with_kube(facts["cp1"], deprecated=kf.deprecated)
    with pytest.raises(RefusedError) as e:
        plan_of(cfg_at(SMALL, "1.36"), facts)
    msg = str(e.value)
    assert "clients requested flowschemas.v1beta9.flowcontrol.apiserver.k8s.io, which " \
           "Kubernetes 1.36 removes" in msg
    assert "things" not in msg  # removed later than the target minor: not in the way yet
    # only the later removal: planned
    facts["cp1"] = _with_kube(facts["cp1"], deprecated=kf.deprecated[1:])
    assert changes(plan_of(cfg_at(SMALL, "1.36"), facts))


def test_the_metric_is_asked_for_only_while_the_api_server_is_another_minor() -> None:
    text = kube_fact(cfg_at(SMALL, "1.36")).command
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    assert "if ! grep -q 'kube-apiserver:v1.36\\.' /etc/kubernetes/manifests/kube-apiserver.yaml" in text
    assert "get --raw=/metrics" in text and "apiserver_requested_deprecated_apis" in text
