"""After a restore: what counts as "the cluster is back" (facts.kube_health's parser)."""

from __future__ import annotations

import json
from typing import Any

from homekube.facts.kube_health import health_command, parse_health

SINCE = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def node(name: str, ready: str = "True") -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def lease(name: str, renew: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"renewTime": renew}}


def deploy(ns: str, name: str, replicas: int, ready: int, gen: int = 1, seen: int = 1) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"namespace": ns, "name": name, "generation": gen},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": seen, "readyReplicas": ready, "updatedReplicas": replicas}}


def ds(ns: str, name: str, want: int, ready: int) -> dict[str, Any]:
    return {"kind": "DaemonSet", "metadata": {"namespace": ns, "name": name, "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": want, "numberReady": ready,
                       "updatedNumberScheduled": want}}


def output(*, readyz: str = "ok", cm: str = "ok", nodes: list[Any] | None = None,
           leases: list[Any] | None = None, workloads: list[Any] | None = None) -> str:
    def items(xs: list[Any] | None) -> str:
        return json.dumps({"items": xs or []}, indent=1)

    return "\n".join([
        "now 1800000000", f"controller-manager {cm}", "scheduler ok", f"readyz {readyz}",
        "--- nodes", items(nodes), "--- leases", items(leases), "--- workloads", items(workloads)])


FRESH = "2027-01-15T08:00:05.123456Z"
STALE = "2027-01-15T07:55:00.000000Z"  # the snapshot's lease: before the restore
ALL_NODES = [node("h1"), node("h2")]
WORKLOADS = [deploy("kube-system", "coredns", 2, 2), ds("kube-system", "kube-proxy", 2, 2),
             ds("kube-flannel", "kube-flannel-ds", 2, 2), deploy("default", "mine", 3, 0)]


def test_a_healthy_cluster_has_no_problems_and_says_what_it_checked() -> None:
    h = parse_health(output(nodes=ALL_NODES, leases=[lease("h1", FRESH), lease("h2", FRESH)],
                            workloads=WORKLOADS))
    assert h.now == 1_800_000_000
    assert h.problems(["h1", "h2"], SINCE) == []
    s = h.summary(["h1", "h2"])
    assert "2/2 nodes Ready" in s and "kube-system/coredns 2/2" in s and "kube-flannel/kube-flannel-ds 2/2" in s
    assert "default/mine" not in s  # only the system namespaces count


def test_stale_statuses_from_the_snapshot_do_not_count() -> None:
    h = parse_health(output(nodes=ALL_NODES, leases=[lease("h1", FRESH), lease("h2", STALE)],
                            workloads=WORKLOADS))
    assert h.problems(["h1", "h2"], SINCE) == [
        "node h2: its kubelet has not renewed its lease since the restore"]


def test_each_kind_of_problem_is_named() -> None:
    h = parse_health(output(readyz="[-]etcd failed", cm=""))
    assert h.problems(["h1"], SINCE) == ["API /readyz: [-]etcd failed",
                                         "kube-controller-manager /healthz: no answer"]
    h = parse_health(output(nodes=[node("h1", "Unknown")], leases=[lease("h1", FRESH)],
                            workloads=[deploy("kube-system", "coredns", 2, 1),
                                       deploy("kube-system", "x", 1, 1, gen=2, seen=1)]))
    assert h.problems(["h1", "h9"], SINCE) == [
        "node h1: not Ready", "node h9: not registered",
        "Deployment kube-system/coredns 1/2 ready", "Deployment kube-system/x 1/1 ready"]
    h = parse_health(output(nodes=ALL_NODES, leases=[lease("h1", FRESH), lease("h2", FRESH)]))
    assert h.problems(["h1", "h2"], SINCE) == ["no system Deployments or DaemonSets listed yet"]


def test_garbage_and_missing_sections_are_problems_not_crashes() -> None:
    h = parse_health("now x\n--- nodes\nerror: the server is currently unable\n")
    assert h.now is None and h.ready == {}
    assert h.problems(["h1"], SINCE)[0] == "API /readyz: no answer"


def test_other_control_planes_are_only_asked_about_their_own_components() -> None:
    cmd = health_command(api=False)
    assert "10257" in cmd and "10259" in cmd and "kubectl" not in cmd
    assert parse_health("controller-manager ok\nscheduler ok\n").problems(["h1"], SINCE, api=False) == []
