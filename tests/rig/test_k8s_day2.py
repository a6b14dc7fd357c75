"""Day-2 on a real kubeadm cluster: restore brings Kubernetes back; a removed node's pods move.

One module-scoped cluster (the lab's Kubernetes 1.36.3 with external TLS etcd 3.6.14, flannel,
CoreDNS): h1 control plane + etcd + worker (untainted), h2 and h3 etcd + workers. The restore
runs first; the node removal last, since it changes the topology: h3 leaves, so etcd goes from
3 members to 2 (homekube's quorum rule: the 2 remaining members are both healthy, 2 of 2 is a
quorum) and its pods move to h1 and h2.

The figures (restore duration, time to every node Ready, drain/removal duration, pods moved)
are printed; run with `-s` to see them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from homekube import lab as hklab
from tests.rig.helpers import run_cli, sh, wait_for
from tests.rig.test_cluster import (
    _cluster_lab,
    apply_cluster,
    arts,
    changes,
    kubectl,
    kubectl_json,
    ready_nodes,
)
from tests.rig.test_removal_reset import inventory

pytestmark = pytest.mark.rig

ETCDCTL = "set -a && . /etc/etcd/etcdctl.env && set +a && etcdctl"
#: the pods (not a DaemonSet's) on h3 before anything drained it, filled by the PDB test
LEFT_H3: list[str] = []


@pytest.fixture(scope="module")
def cluster(lab_config: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[hklab.Lab, Path, dict[str, list[str]]]]:
    """The cluster, and each host's file/unit/port inventory from before homekube touched it."""
    config = tmp_path_factory.mktemp("k8s-day2") / "cluster.yaml"
    lab = _cluster_lab(3, config, {"h1": "control-plane, etcd, worker", "h2": "etcd, worker",
                                   "h3": "etcd, worker"})
    # the lab's cluster.yaml sets absolute eviction floors (the machine's disk is shared)
    assert "evictionHard" in config.read_text()
    fresh = {h.name: inventory(h.name) for h in lab.hosts}
    apply_cluster(config)
    try:
        wait_for("three nodes Ready", lambda: ready_nodes() == {"h1": True, "h2": True, "h3": True},
                 seconds=600)
        wait_for("CoreDNS Ready", coredns_ready, seconds=600)
    except BaseException:
        print(hklab.host_exec("h1", "kubectl --kubeconfig=/etc/kubernetes/admin.conf get pods -A -o wide; "
                                    "kubectl --kubeconfig=/etc/kubernetes/admin.conf -n kube-system "
                                    "describe pods -l k8s-app=kube-dns | tail -40").stdout)
        raise
    try:
        yield lab, config, fresh
    finally:
        hklab.down()
        hklab.up(3, config_path=lab_config)


def coredns_ready() -> bool:
    d = kubectl_json("-n kube-system get deployment coredns")
    return bool(d["status"].get("readyReplicas")) and d["status"]["readyReplicas"] == d["spec"]["replicas"]


def deployment(name: str, ns: str, image: str, replicas: int, *, spread: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": image, "args": ["serve", ":8080"]}],
                            "terminationGracePeriodSeconds": 1}
    if spread:  # one pod per node, so one lands on h3 whatever the scheduler prefers
        spec["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": name}}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def rolled_out(ns: str, name: str) -> bool:
    d = kubectl_json(f"-n {ns} get deployment {name}")
    st = d["status"]
    return (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and st.get("readyReplicas", 0) == st.get("updatedReplicas", 0) == d["spec"]["replicas"]
            and st.get("replicas", 0) == d["spec"]["replicas"])


def pods_on(node: str) -> list[dict[str, Any]]:
    """Pods bound to `node` that are not a DaemonSet's (those go with the node)."""
    items = kubectl_json(f"get pods -A --field-selector spec.nodeName={node}")["items"]
    return [p for p in items
            if not any(o["kind"] == "DaemonSet" for o in p["metadata"].get("ownerReferences", []))]


def etcd_members() -> list[str]:
    return sorted(m["name"] for m in json.loads(sh("h1", f"{ETCDCTL} member list -w json"))["members"])


def without_h3(config: Path, dest: Path, *, wait: int | None = None) -> Path:
    text = "\n".join(ln for ln in config.read_text().splitlines()
                     if not ln.lstrip().startswith("- {name: h3,")) + "\n"
    if wait is not None:
        assert "  package: 300\n" in text
        text = text.replace("  package: 300\n", f"  package: 300\n  wait: {wait}\n")
    dest.write_text(text)
    return dest


# ---------------------------------------------------------------------------------------------
# backup -> delete a namespace -> restore


def test_restore_brings_back_a_deleted_namespace_and_the_cluster(
        cluster: tuple[hklab.Lab, Path, dict[str, list[str]]]) -> None:
    lab, config, _ = cluster
    image = arts(lab).hkecho_image
    kubectl("create namespace keepme")
    for i in (1, 2, 3):
        kubectl(f"-n keepme create configmap cm{i} --from-literal=value=v{i}")
    kubectl("-n keepme create secret generic s1 --from-literal=password=hunter2")
    kubectl("apply -f -", input=json.dumps(deployment("web", "keepme", image, 2)))
    wait_for("keepme/web rolled out", lambda: rolled_out("keepme", "web"), seconds=300)

    res = run_cli("backup", "--config", str(config), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    snapshot = res.stdout.strip().splitlines()[-1]
    assert snapshot.endswith(".db"), res.stdout

    kubectl("delete namespace keepme --wait=true --timeout=300s")
    kubectl("create namespace after-backup")
    assert "keepme" not in kubectl("get namespaces -o name")

    t0 = time.monotonic()
    res = run_cli("restore", snapshot, "--yes", "--config", str(config), timeout=1800)
    restore_s = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the restore says what it waited for, and that it is all back
    back = next((ln for ln in res.stdout.splitlines() if ln.startswith("Kubernetes is back")), "")
    assert back, res.stdout
    for said in ("API /readyz ok", "kube-controller-manager and kube-scheduler healthy",
                 "3/3 nodes Ready with their kubelets' leases renewed (h1, h2, h3)",
                 "kube-system/coredns 2/2", "kube-system/kube-proxy 3/3",
                 "kube-flannel/kube-flannel-ds 3/3"):
        assert said in back, back
    # the whole control plane was stopped and started, by the plan's own steps
    for step in ("stop kube-apiserver, kube-controller-manager and kube-scheduler",
                 "start the control plane again"):
        assert step in res.stderr, res.stderr[-3000:]
    assert sorted(sh("h1", "ls /etc/kubernetes/manifests").split()) == [
        "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"]

    # right away, no manual step: everything is back as the snapshot had it
    t1 = time.monotonic()
    wait_for("all nodes Ready", lambda: ready_nodes() == {"h1": True, "h2": True, "h3": True}, seconds=60)
    nodes_ready_s = time.monotonic() - t1
    assert coredns_ready()
    cms = kubectl_json("-n keepme get configmaps")["items"]
    assert {c["metadata"]["name"]: c["data"] for c in cms if c["metadata"]["name"].startswith("cm")} == {
        f"cm{i}": {"value": f"v{i}"} for i in (1, 2, 3)}
    assert "s1" in kubectl("-n keepme get secrets -o name")
    assert "after-backup" not in kubectl("get namespaces -o name")  # made after the backup
    wait_for("keepme/web rolled out again", lambda: rolled_out("keepme", "web"), seconds=300)

    # controllers and the scheduler work: a new Deployment gets its pods scheduled and Running
    kubectl("apply -f -", input=json.dumps(deployment("fresh", "keepme", image, 2)))
    wait_for("keepme/fresh rolled out", lambda: rolled_out("keepme", "fresh"), seconds=300)
    fresh_pods = kubectl_json("-n keepme get pods -l app=fresh")["items"]
    assert all(p["spec"].get("nodeName") and p["status"]["phase"] == "Running" for p in fresh_pods)
    assert changes(config) == 0

    m = re.search(r"restored 3 members in ([\d.]+)s .*\nKubernetes is back after ([\d.]+)s more "
                  r"\(total ([\d.]+)s\)", res.stdout)
    assert m, res.stdout
    print(f"\nFIGURES restore: CLI wall {restore_s:.1f}s; etcd part {m[1]}s; waiting for "
          f"Kubernetes {m[2]}s; total {m[3]}s; every node Ready {nodes_ready_s:.1f}s after it returned")


# ---------------------------------------------------------------------------------------------
# node removal


def test_a_drain_blocked_by_a_budget_stops_with_a_clear_message(
        cluster: tuple[hklab.Lab, Path, dict[str, list[str]]], tmp_path: Path) -> None:
    lab, config, _ = cluster
    image = arts(lab).hkecho_image
    kubectl("create namespace guard")
    # two pods per node, unguarded: they move when h3 goes (the next test)
    kubectl("apply -f -", input=json.dumps(deployment("spread", "guard", image, 6, spread=True)))
    kubectl("apply -f -", input=json.dumps(deployment("guarded", "guard", image, 3, spread=True)))
    wait_for("guard/spread rolled out", lambda: rolled_out("guard", "spread"), seconds=300)
    wait_for("guard/guarded rolled out", lambda: rolled_out("guard", "guarded"), seconds=300)
    on_h3 = pods_on("h3")
    assert {p["metadata"]["labels"].get("app") for p in on_h3} >= {"guarded", "spread"}, on_h3
    LEFT_H3.extend(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in on_h3)
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": "all-of-them", "namespace": "guard"},
           "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "guarded"}}}}
    kubectl("apply -f -", input=json.dumps(pdb))
    wait_for("the budget allows no disruption", lambda: kubectl_json(
        "-n guard get pdb all-of-them")["status"].get("expectedPods") == 3)

    blocked = without_h3(config, tmp_path / "blocked.yaml", wait=20)
    res = run_cli("apply", "--config", str(blocked), timeout=900)
    assert res.returncode == 1, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "drain and delete node h3" in err and "h1" in err, res.stderr
    assert ("node h3 was not drained within 20 s (timeouts.wait): pods still on it: guard/guarded-"
            in err), res.stderr
    assert "PodDisruptionBudgets allowing no disruption: guard/all-of-them" in err, res.stderr
    assert "Traceback" not in res.stderr
    # nothing else happened: h3 is still a node (cordoned) and an etcd member
    assert kubectl_json("get node h3")["spec"].get("unschedulable") is True
    assert etcd_members() == ["h1", "h2", "h3"]
    kubectl("-n guard delete pdb all-of-them")


def test_removing_a_worker_moves_its_pods_and_leaves_a_fresh_host(
        cluster: tuple[hklab.Lab, Path, dict[str, list[str]]], tmp_path: Path) -> None:
    _, config, fresh = cluster
    # the blocked drain already evicted what it could (its replacements wait, Pending, while
    # a spread constraint still counts h3); the guarded pod is still there
    assert "guarded" in {p["metadata"]["labels"].get("app") for p in pods_on("h3")}
    moved = sorted(LEFT_H3)  # everything that was on h3 before any drain
    assert len(moved) >= 3, moved

    smaller = without_h3(config, tmp_path / "two.yaml")
    plan = run_cli("plan", "--config", str(smaller))
    assert plan.returncode == 0, plan.stderr
    for line in ("drain and delete node h3", "remove etcd member h3", "remove homekube from h3"):
        assert line in plan.stdout, plan.stdout
    t0 = time.monotonic()
    res = run_cli("apply", "--config", str(smaller), timeout=1800)
    removal_s = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    drain = re.search(r"✓ h1: drain and delete node h3 \(([^)]+)\)", res.stderr)
    assert drain, res.stderr

    # the Node is gone, the others are Ready, and h3's pods run elsewhere
    assert ready_nodes() == {"h1": True, "h2": True}
    for ns, app in (("guard", "guarded"), ("guard", "spread"), ("keepme", "web"), ("keepme", "fresh")):
        wait_for(f"{ns}/{app} rolled out on h1 and h2", lambda n=ns, a=app: rolled_out(n, a),  # type: ignore[misc]
                 seconds=300)
        pods = kubectl_json(f"-n {ns} get pods -l app={app}")["items"]
        assert pods and all(p["spec"].get("nodeName") in ("h1", "h2") and p["status"]["phase"] == "Running"
                            for p in pods), [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods]
    wait_for("CoreDNS Ready", coredns_ready, seconds=300)
    assert etcd_members() == ["h1", "h2"]
    # the API server follows etcd's membership: kubeadm-config and --etcd-servers name h1, h2
    etcd = ",".join(f"https://{hklab.settings.NET4_PREFIX}.1{i}:2379" for i in (1, 2))
    assert f"--etcd-servers={etcd}" in sh("h1", "ps -eo args | grep '^kube-apiserver '")
    assert f"--etcd-servers={etcd}" in sh("h1", "cat /etc/kubernetes/manifests/kube-apiserver.yaml")
    cc = YAML(typ="safe").load(kubectl("-n kube-system get configmap kubeadm-config "
                                       "-o jsonpath='{.data.ClusterConfiguration}'"))
    assert cc["etcd"]["external"]["endpoints"] == etcd.split(","), cc["etcd"]
    assert "regenerate /etc/kubernetes/manifests/kube-apiserver.yaml with 2 etcd server(s)" in res.stderr

    # h3 is what it was before homekube: same files, units and listening ports
    after = inventory("h3")
    extra = sorted(set(after) - set(fresh["h3"]))
    missing = sorted(set(fresh["h3"]) - set(after))
    if extra or missing:
        pytest.fail(f"h3 differs from a fresh host: {len(extra)} extra: {extra}; "
                    f"{len(missing)} missing: {missing}")
    assert changes(smaller) == 0
    print(f"\nFIGURES removal: apply {removal_s:.1f}s, of which drain + delete {drain[1]}; "
          f"{len(moved)} pods moved off h3 ({', '.join(moved)})")
