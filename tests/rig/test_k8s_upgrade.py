"""A real Kubernetes minor upgrade, 1.35 → 1.36, by `homekube apply`, with a workload serving.

Three lab hosts (h1 control plane + etcd, h2 and h3 etcd + workers) are brought up at
Kubernetes 1.35.4 from the lab's own artifacts (`lab up --kubernetes-version 1.35`: the lab
publishes both minors). A Deployment of the lab's hkecho server (2 replicas, a
PodDisruptionBudget of minAvailable 1, a readiness probe and a preStop pause so a pod leaves
the Service before it stops) answers behind a ClusterIP Service while a client on h1 sends it
one request after another through kube-proxy. Then cluster.yaml names 1.36.3: `plan` must show
the kubeadm order and `apply` must do it; every node reports v1.36.3 afterwards, the control
plane's static pods run 1.36.3 images, a second apply changes nothing, and the client's failed
requests are counted (and printed).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homekube import lab as hklab
from homekube.lab import artifacts
from homekube.lab.artifacts import recipes
from tests.rig.helpers import run_cli, run_on, sh, wait_for
from tests.rig.test_artifacts import assert_release_served, binary_says
from tests.rig.test_cluster import (
    KUBECTL,
    apply_cluster,
    changes,
    kubectl,
    kubectl_json,
    ready_nodes,
)

pytestmark = pytest.mark.rig

OLD, NEW = "1.35.4", "1.36.3"
CLIENT_LOG = "/root/hk-client.log"
CLIENT_UNIT = "hk-upgrade-client"


@pytest.fixture(scope="module")
def restore_session_lab(lab_config: Path) -> Iterator[None]:
    yield
    hklab.down()
    hklab.up(3, config_path=lab_config)


@pytest.fixture(scope="module")
def previous_minor() -> None:
    """1.35's artifacts, the normal idempotent way: taken from the cache (about a second),
    waited for while another process builds them (CI starts that build in the background
    before the tests; gobuild's lock), or built here. Never skipped: a failed build fails
    the module with the compiler's words."""
    t0 = time.monotonic()
    report = artifacts.run(lambda line: print(f"artifacts: {line}", flush=True),
                           minors=artifacts.minors_for(OLD), publish=False)
    built = {k: round(v) for k, v in report.steps.items() if k.startswith("build") and v >= 1}
    print(f"\n{OLD} artifacts ready after {time.monotonic() - t0:.0f} s "
          f"(built here: {built or 'nothing'})")


@pytest.fixture(scope="module")
def old_cluster(previous_minor: None, restore_session_lab: None,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    config = tmp_path_factory.mktemp("k8s-upgrade") / "cluster.yaml"
    hklab.down()
    lab = hklab.up(3, config_path=config, kubernetes=True, kubernetes_version="1.35")
    text = config.read_text()
    assert f'version: "{OLD}"' in text, text
    for name, roles in (("h1", "control-plane, etcd"), ("h2", "etcd, worker"),
                        ("h3", "etcd, worker")):
        old = next(ln for ln in text.splitlines() if ln.lstrip().startswith(f"- {{name: {name},"))
        text = text.replace(old, old.split("roles:")[0] + f"roles: [{roles}]}}")
    config.write_text(text)
    t0 = time.monotonic()
    apply_cluster(config)
    print(f"\n1.35 cluster applied in {time.monotonic() - t0:.0f} s")
    wait_for("three nodes Ready", lambda: ready_nodes() == {"h1": True, "h2": True, "h3": True},
             seconds=600)
    yield lab, config


def node_versions() -> dict[str, str]:
    return {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
            for n in kubectl_json("get nodes")["items"]}


def workload(image: str) -> list[dict[str, Any]]:
    labels = {"app": "web"}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default"},
         "spec": {
             "replicas": 2,
             "selector": {"matchLabels": labels},
             "strategy": {"type": "RollingUpdate",
                          "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "terminationGracePeriodSeconds": 30,
                     # one replica per worker while both are schedulable
                     "topologySpreadConstraints": [{
                         "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector":
                             {"matchLabels": labels}}],
                     "containers": [{
                         "name": "web", "image": image, "args": ["serve", ":8080"],
                         "ports": [{"containerPort": 8080}],
                         "env": [
                             {"name": "POD_IP",
                              "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                             {"name": "NODE_NAME",
                              "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                         "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                            "periodSeconds": 1, "failureThreshold": 1},
                         # stay up while kube-proxy on every node drops the endpoint (no shell
                         # in the image: the kubelet's own sleep action)
                         "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                     }],
                 },
             },
         }},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": "web", "namespace": "default"},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web", "namespace": "default"},
         "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}},
    ]


def client_script(ip: str) -> str:
    """One request after another (2 s timeout each), one line per request: ok/FAIL + time."""
    return (f": > {CLIENT_LOG}; while true; do "
            f"if out=$(curl -fsS --max-time 2 http://{ip}/ 2>&1); then "
            f'echo "ok $(date +%s.%N) $out" >> {CLIENT_LOG}; else '
            f'echo "FAIL $(date +%s.%N) $out" >> {CLIENT_LOG}; fi; sleep 0.05; done')


def client_counts() -> tuple[int, list[str], dict[str, int]]:
    """(requests, failure lines, answers per node)."""
    lines = sh("h1", f"cat {CLIENT_LOG}").splitlines()
    fails = [ln for ln in lines if ln.startswith("FAIL")]
    per_node: dict[str, int] = {}
    for ln in lines:
        if ln.startswith("ok") and "node=" in ln:
            node = ln.split("node=")[1].split()[0]
            per_node[node] = per_node.get(node, 0) + 1
    return len(lines), fails, per_node


def plan_order(config: Path) -> list[tuple[int, str, int, str, str]]:
    """The plan's changes in run order: (phase index, phase, wave, host, resource)."""
    res = run_cli("plan", "--config", str(config), "--output", "json")
    assert res.returncode in (0, 4), res.stdout[-2000:] + res.stderr[-2000:]
    data = json.loads(res.stdout)
    phases = data["phases"]
    out = [(phases.index(c["phase"]), c["phase"], c["wave"], h, c["resource"])
           for h, v in data["hosts"].items() for c in v["changes"]]
    return sorted(out)


def rolled_out() -> None:
    """Wait for deployment/web; fail with what its pods say."""
    res = run_on("h1", f"{KUBECTL} rollout status deployment/web --timeout=300s", ok=False,
                 timeout=330)
    if res.returncode != 0:
        pods = sh("h1", f"{KUBECTL} get pods -o wide; {KUBECTL} describe pods -l app=web | "
                        "tail -60", ok=False)
        pytest.fail(f"deployment web not rolled out: {res.stdout}{res.stderr}\n{pods}")


# the first test also waits for (or makes) 1.35's artifacts and brings the 1.35 cluster up
@pytest.mark.timeout(5400)
def test_previous_minor_artifacts_are_built_and_served(
        old_cluster: tuple[hklab.Lab, Path]) -> None:
    lab, _ = old_cluster
    assert lab.artifacts is not None
    prev = recipes.RELEASES[1]
    assert prev.minor == "1.35" and prev.kubernetes.version == OLD
    out = binary_says
    assert out(prev.kubernetes, "kubelet", "--version").strip() == f"Kubernetes v{OLD}"
    assert out(prev.kubernetes, "kubeadm", "version", "-o", "short").strip() == f"v{OLD}"
    assert "CoreDNS-1.13.1" in out(prev.coredns, "coredns", "-version")
    assert_release_served(prev, lab.artifacts)
    assert lab.artifacts.pause_image.endswith("/pause:3.10.1")
    assert lab.artifacts.coredns_image.endswith("/coredns:v1.13.1")


@pytest.mark.timeout(5400)  # bringing up 1.35 (~10 min under load) and the upgrade itself
def test_minor_upgrade_keeps_a_deployment_serving(old_cluster: tuple[hklab.Lab, Path],
                                                  tmp_path: Path) -> None:
    lab, config = old_cluster
    assert lab.artifacts is not None and lab.artifacts.kubernetes_version == OLD
    assert set(node_versions().values()) == {f"v{OLD}"}, node_versions()

    # a workload behind a Service, and a client hammering it from h1 through kube-proxy
    kubectl("apply -f -", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                            "items": workload(lab.artifacts.hkecho_image)}))
    rolled_out()

    # refused before anything is touched: a skipped minor, an etcd member down, a node NotReady
    skip = tmp_path / "skip.yaml"
    skip.write_text(config.read_text().replace(f'version: "{OLD}"', 'version: "1.37"'))
    refused = run_cli("apply", "--config", str(skip))
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "1.35 → 1.37 skips a minor" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    target = tmp_path / "target.yaml"
    target.write_text(config.read_text().replace(f'version: "{OLD}"', f'version: "{NEW}"'))
    run_on("h3", "systemctl stop etcd")
    try:
        refused = run_cli("apply", "--config", str(target))
    finally:
        run_on("h3", "systemctl start etcd")
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "h3: etcd does not answer" in refused.stderr, refused.stderr
    run_on("h3", "systemctl stop kubelet")
    try:
        wait_for("node h3 NotReady", lambda: not ready_nodes()["h3"], seconds=300)
        refused = run_cli("apply", "--config", str(target))
    finally:
        run_on("h3", "systemctl start kubelet")
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "node h3 is not Ready" in refused.stderr, refused.stderr
    wait_for("three nodes Ready", lambda: ready_nodes() == {"h1": True, "h2": True, "h3": True},
             seconds=300)
    assert set(node_versions().values()) == {f"v{OLD}"}, node_versions()  # nothing moved
    rolled_out()

    # the client: one request after another from h1, through kube-proxy, to the two pods
    ip = kubectl_json("get service web")["spec"]["clusterIP"]
    run_on("h1", f"systemd-run --unit {CLIENT_UNIT} --collect bash -c {shlex.quote(client_script(ip))}")
    wait_for("the client's first answers", lambda: client_counts()[0] >= 20, seconds=120)
    total, fails, per_node = client_counts()
    assert not fails and set(per_node) == {"h2", "h3"}, (fails[:5], per_node)

    # the new minor: plan shows kubeadm's order
    config.write_text(target.read_text())
    order = plan_order(config)
    print("\nplan:\n" + "\n".join(f"  {o}" for o in order))
    upgrade = [(w, h, r) for _, ph, w, h, r in order if ph == "k8s-upgrade"]
    resources = [(h, r) for _, h, r in upgrade]
    repos = [i for i, (_, r) in enumerate(resources) if r == "repositories"]
    assert len(repos) == 3 and repos == [0, 1, 2], resources
    assert resources[3] == ("h1", "kubeadm upgrade apply"), resources
    # kubelets one node at a time: h1 first, then the workers, each drained and uncordoned
    assert resources[4:] == [
        ("h1", "drain h1"), ("h1", "kubelet"), ("h1", "uncordon h1"),
        ("h1", "drain h2"), ("h2", "kubelet"), ("h1", "uncordon h2"),
        ("h1", "drain h3"), ("h3", "kubelet"), ("h1", "uncordon h3"),
    ], resources
    waves = [w for w, _, _ in upgrade[3:]]
    assert waves == sorted(waves) and len(set(waves)) == len(waves), upgrade  # one at a time

    t0 = time.monotonic()
    res = run_cli("apply", "--config", str(config), timeout=3600)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    print(f"\nupgrade apply {OLD} → {NEW} took {took:.0f} s")

    wait_for("three nodes Ready", lambda: ready_nodes() == {"h1": True, "h2": True, "h3": True},
             seconds=600)
    assert node_versions() == {"h1": f"v{NEW}", "h2": f"v{NEW}", "h3": f"v{NEW}"}
    nodes = kubectl_json("get nodes")["items"]
    assert not any(n["spec"].get("unschedulable") for n in nodes), "a node is still cordoned"
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        pod = kubectl_json(f"-n kube-system get pod {component}-h1")
        image = pod["spec"]["containers"][0]["image"]
        assert image.endswith(f"/{component}:v{NEW}"), image
    proxy = kubectl_json("-n kube-system get daemonset kube-proxy")
    assert proxy["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":v{NEW}")
    assert sh("h1", "kubeadm version -o short").strip() == f"v{NEW}"
    for h in ("h1", "h2", "h3"):
        assert sh(h, "kubelet --version").strip() == f"Kubernetes v{NEW}"

    # the workload is still there and served throughout
    rolled_out()
    run_on("h1", f"systemctl stop {CLIENT_UNIT}")
    total, fails, per_node = client_counts()
    print(f"\nclient during the upgrade: {len(fails)} failed of {total} requests; "
          f"answers per node: {per_node}")
    for ln in fails[:20]:
        print(f"  {ln}")
    assert total > 100, total
    assert not fails, f"{len(fails)} failed of {total} requests: {fails[:10]}"

    # a second apply changes nothing
    again = run_cli("apply", "--config", str(config), timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert changes(config) == 0
