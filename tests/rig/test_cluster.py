"""A real kubeadm cluster on lab hosts, built by `homekube apply` from bare hosts.

Everything comes from the lab's own artifacts (`homekube lab artifacts`: Kubernetes 1.36,
etcd 3.6, containerd, runc, flannel, CoreDNS built from Go modules, served by the lab's
mirror, signed apt repository and registry). The cluster.yaml is the one `lab up
--kubernetes` writes; its lab-only settings (cgroup v1, OOM scores, conntrack, flannel
instead of Calico, `ui.kind: token`) are explained there.

Two clusters, one after the other: one host with every role (the seed's single server), then
h1 control plane + etcd with h2 and h3 as etcd members and workers. Each module restores the
session's etcd-only lab when it is done.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homekube import lab as hklab
from homekube.config.loader import load
from homekube.lab.artifacts.pipeline import LabArtifacts
from homekube.render.kubernetes import all_cluster_objects
from homekube.render.yamlout import dump_all
from tests.rig.helpers import run_cli, sh, wait_for

pytestmark = pytest.mark.rig

KUBECTL = "kubectl --kubeconfig=/etc/kubernetes/admin.conf"


def kubectl(args: str, *, input: str | None = None, host: str = "h1") -> str:
    return sh(host, f"{KUBECTL} {args}", input=input)


def kubectl_json(args: str) -> Any:
    return json.loads(kubectl(f"{args} -o json"))


def ready_nodes() -> dict[str, bool]:
    out = {}
    for n in kubectl_json("get nodes")["items"]:
        conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
        out[n["metadata"]["name"]] = conds.get("Ready") == "True"
    return out


def pod_phase(ns: str, name: str) -> str:
    res = hklab.host_exec("h1", f"{KUBECTL} -n {ns} get pod {name} -o jsonpath='{{.status.phase}}'")
    return res.stdout.strip() if res.returncode == 0 else ""


def run_pod(name: str, node: str, image: str, args: list[str], *, ns: str = "default") -> None:
    """A pod pinned to `node` (nodeName: no scheduler decision to wait for)."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never",
            "containers": [{
                "name": "c", "image": image, "args": args,
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "NODE_NAME",
                         "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            }],
        },
    }
    kubectl("apply -f -", input=json.dumps(pod))


def pod_logs(name: str, ns: str = "default") -> str:
    return kubectl(f"-n {ns} logs {name}")


def apply_cluster(config: Path) -> subprocess.CompletedProcess[str]:
    res = run_cli("apply", "--config", str(config), timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def changes(config: Path) -> int:
    res = run_cli("plan", "--config", str(config), "--output", "json")
    assert res.returncode in (0, 4), res.stderr  # 4: changes pending (--detailed-exitcode)
    return int(json.loads(res.stdout)["changes"])


@pytest.fixture(scope="module")
def restore_session_lab(lab_config: Path) -> Iterator[None]:
    yield
    hklab.down()
    hklab.up(3, config_path=lab_config)


def arts(lab: hklab.Lab) -> LabArtifacts:
    assert lab.artifacts is not None, "the lab was not brought up with kubernetes=True"
    return lab.artifacts


def _cluster_lab(n: int, config: Path, roles: dict[str, str] | None = None) -> hklab.Lab:
    hklab.down()
    lab = hklab.up(n, config_path=config, kubernetes=True)
    text = config.read_text()
    for name, new in (roles or {}).items():
        old = next(ln for ln in text.splitlines() if ln.lstrip().startswith(f"- {{name: {name},"))
        text = text.replace(old, old.split("roles:")[0] + f"roles: [{new}]}}")
    config.write_text(text)
    return lab


# ---------------------------------------------------------------------------------------------
# one host, every role


@pytest.fixture(scope="module")
def single(restore_session_lab: None,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    config = tmp_path_factory.mktemp("single") / "cluster.yaml"
    lab = _cluster_lab(1, config)
    apply_cluster(config)
    yield lab, config


def test_single_host_cluster_comes_up_untainted(single: tuple[hklab.Lab, Path]) -> None:
    lab, config = single
    wait_for("node h1 Ready", lambda: ready_nodes() == {"h1": True})
    node = kubectl_json("get node h1")
    taints = {t["key"] for t in node["spec"].get("taints", [])}
    assert "node-role.kubernetes.io/control-plane" not in taints, "the seed's single node must be schedulable"
    # Ready comes from the kubelet; the node controller lifts its not-ready taint a moment later
    wait_for("node h1 without taints", lambda: not kubectl_json("get node h1")["spec"].get("taints"))
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")

    def coredns_ready() -> bool:
        d = kubectl_json("-n kube-system get deployment coredns")
        return bool(d["status"].get("readyReplicas")) and (
            d["status"].get("readyReplicas") == d["spec"]["replicas"])
    wait_for("CoreDNS Ready", coredns_ready)

    image = arts(lab).hkecho_image
    run_pod("echo1", "h1", image, ["serve", ":8080"])
    wait_for("pod echo1 Running", lambda: pod_phase("default", "echo1") == "Running")
    assert changes(config) == 0


def test_apiserver_uses_the_external_etcd_over_tls(single: tuple[hklab.Lab, Path]) -> None:
    manifest = sh("h1", "cat /etc/kubernetes/manifests/kube-apiserver.yaml")
    lab = hklab.current()
    assert lab is not None
    assert f"--etcd-servers=https://{lab.hosts[0].ipv4}:2379" in manifest
    assert "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt" in manifest
    assert "--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key" in manifest
    assert "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt" in manifest
    # no local etcd: kubeadm did not write a static pod for one
    assert sh("h1", "ls /etc/kubernetes/manifests").split() == [
        "kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"]
    subject = sh("h1", "openssl x509 -noout -subject -in "
                       "/etc/kubernetes/pki/apiserver-etcd-client.crt")
    assert "kube-apiserver-etcd-client" in subject
    # etcd refuses a client without a certificate, so the API's data path is the mTLS one
    res = hklab.host_exec("h1", "curl -sS --max-time 5 --cacert /etc/kubernetes/pki/etcd/ca.crt "
                                "https://127.0.0.1:2379/version")
    assert res.returncode != 0 or "etcdserver" not in res.stdout
    # and the API's objects really are in that etcd
    kubectl("create namespace hk-etcd-probe --dry-run=none")
    keys = sh("h1", "set -a && . /etc/etcd/etcdctl.env && set +a && etcdctl get --prefix --keys-only "
                    "/registry/namespaces/hk-etcd-probe")
    assert "/registry/namespaces/hk-etcd-probe" in keys


def test_kubeconfig_works_from_the_operator_machine(single: tuple[hklab.Lab, Path],
                                                    tmp_path: Path) -> None:
    lab, config = single
    out = tmp_path / "kubeconfig"
    res = run_cli("kubeconfig", "--config", str(config), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    kubectl_bin = arts(lab).kubectl
    assert kubectl_bin is not None
    got = subprocess.run([str(kubectl_bin), "--kubeconfig", str(out), "get", "nodes", "-o",
                          "name"], capture_output=True, text=True, timeout=60, check=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["node/h1"]


def test_status_reads_the_running_cluster(single: tuple[hklab.Lab, Path]) -> None:
    _, config = single
    res = run_cli("status", "--config", str(config), "--output", "json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    k = data["kubernetes"]
    assert k["api"]["via"] == "h1"
    assert k["api"]["nodeReady"] == {"h1": "True"}
    h1 = next(h for h in data["hosts"] if h["name"] == "h1")
    certs = h1["certs"]
    assert certs["/etc/kubernetes/pki/apiserver.crt"]["cn"] == "kube-apiserver"
    assert 360 <= certs["/etc/kubernetes/pki/apiserver.crt"]["daysLeft"] <= 366
    assert certs["/etc/kubernetes/pki/ca.crt"]["daysLeft"] > 3600


# ---------------------------------------------------------------------------------------------
# three hosts: h1 control plane + etcd, h2 and h3 etcd + workers


@pytest.fixture(scope="module")
def three(restore_session_lab: None, single: tuple[hklab.Lab, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    config = tmp_path_factory.mktemp("three") / "cluster.yaml"
    lab = _cluster_lab(3, config, {"h1": "control-plane, etcd", "h2": "etcd, worker",
                                   "h3": "etcd, worker"})
    apply_cluster(config)
    yield lab, config


def test_workers_join_and_run_a_pod_each(three: tuple[hklab.Lab, Path]) -> None:
    lab, config = three
    wait_for("three nodes Ready", lambda: ready_nodes() == {"h1": True, "h2": True, "h3": True})
    image = arts(lab).hkecho_image
    for node in ("h1", "h2", "h3"):
        run_pod(f"on-{node}", node, image, ["serve", ":8080"])
    for node in ("h1", "h2", "h3"):
        wait_for(f"pod on-{node} Running", lambda n=node: pod_phase("default", f"on-{n}") == "Running")  # type: ignore[misc]
    members = sh("h1", "set -a && . /etc/etcd/etcdctl.env && set +a && etcdctl member list -w json")
    assert len(json.loads(members)["members"]) == 3
    assert changes(config) == 0


def test_service_by_dns_name_across_workers_in_both_families(
        three: tuple[hklab.Lab, Path]) -> None:
    lab, _ = three
    image = arts(lab).hkecho_image
    kubectl("create namespace svc-test")
    run_pod("backend", "h3", image, ["serve", ":8080"], ns="svc-test")
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "backend", "namespace": "svc-test"},
           "spec": {"ipFamilyPolicy": "RequireDualStack", "selector": {"app": "backend"},
                    "ports": [{"port": 80, "targetPort": 8080}]}}
    kubectl("apply -f -", input=json.dumps(svc))
    wait_for("backend Running", lambda: pod_phase("svc-test", "backend") == "Running")
    ips = kubectl_json("-n svc-test get service backend")["spec"]["clusterIPs"]
    assert len(ips) == 2 and ":" in ips[1], ips
    # a cluster that came up seconds ago may still be starting CoreDNS; until it is Ready its
    # Service has no endpoints and kube-proxy refuses DNS (seen in CI: "connection refused")
    kubectl("-n kube-system rollout status deployment/coredns --timeout=300s")
    url = "http://backend.svc-test.svc.cluster.local/"
    for fam in ("4", "6"):
        name = f"client{fam}"
        run_pod(name, "h2", image, ["get", url, fam], ns="svc-test")
        wait_for(f"{name} finished", lambda n=name: pod_phase("svc-test", n) in ("Succeeded", "Failed"))  # type: ignore[misc]
        log = pod_logs(name, "svc-test")
        assert pod_phase("svc-test", name) == "Succeeded", log
        assert "node=h3" in log, log
        # the client's own pod address, as the backend saw it, is of the family asked for
        remote = log.split("remote=")[1]
        assert (remote.startswith("[") if fam == "6" else not remote.startswith("[")), log


def test_ui_token_is_read_only(three: tuple[hklab.Lab, Path]) -> None:
    _, config = three
    res = run_cli("ui", "--config", str(config), "--token-only")
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert token.count(".") == 2  # a JWT
    lab = hklab.current()
    assert lab is not None
    api = f"https://{lab.hosts[0].ipv4}:6443"

    def can(verb: str, resource: str, ns: str = "svc-test") -> str:
        out = sh("h1", f"kubectl --server={api} --certificate-authority=/etc/kubernetes/pki/ca.crt "
                       f"--token=\"$(cat)\" auth can-i {verb} {resource} -n {ns} || true",
                 input=token)
        return out.strip()

    assert can("list", "pods") == "yes"
    assert can("get", "secrets") == "no"
    assert can("delete", "pods") == "no"
    # and for real, not only what the authorizer predicts
    got = hklab.host_exec("h1", f"kubectl --server={api} --certificate-authority="
                          "/etc/kubernetes/pki/ca.crt --token=\"$(cat)\" -n kube-system get secrets",
                          input=token)
    assert got.returncode != 0 and "forbidden" in got.stderr.lower(), got.stderr
    pods = sh("h1", f"kubectl --server={api} --certificate-authority=/etc/kubernetes/pki/ca.crt "
                    "--token=\"$(cat)\" -n svc-test get pods -o name", input=token)
    assert "pod/backend" in pods
    # the token never lands in homekube's output other than the one line asked for
    assert token not in res.stderr


def test_calico_and_headlamp_objects_are_accepted_by_the_api_server(
        three: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    """The lab cannot run Calico or Headlamp; the real API server still judges their objects."""
    lab, config = three
    crds = arts(lab).calico_crds
    assert crds is not None, "run `homekube lab artifacts` (it bundles Calico's CRDs)"
    kubectl("apply --server-side --force-conflicts -f - >/dev/null", input=crds.read_text())
    kubectl("wait --for=condition=Established --timeout=120s "
            "crd/installations.operator.tigera.io crd/apiservers.operator.tigera.io "
            "crd/ippools.crd.projectcalico.org")
    calico = tmp_path / "calico.yaml"
    calico.write_text(config.read_text().replace("cni: flannel", "cni: calico")
                      .replace("kind: token", "kind: headlamp"))
    objects = all_cluster_objects(load(calico))
    kinds = [o["kind"] for o in objects]
    assert {"Installation", "Deployment", "ClusterRoleBinding"} <= set(kinds), kinds
    out = kubectl("apply --server-side --dry-run=server -f -", input=dump_all(objects))
    assert out.count("(server dry run)") == len(objects), out
    # the dry run is no formality: a broken Installation is refused by the same server
    bad = next(o for o in objects if o["kind"] == "Installation")
    bad = json.loads(json.dumps(bad))
    bad["spec"]["calicoNetwork"]["ipPools"][0]["natOutgoing"] = True  # must be an enum
    res = hklab.host_exec("h1", f"{KUBECTL} apply --server-side --dry-run=server -f -",
                          input=json.dumps(bad))
    assert res.returncode != 0, res.stdout


def test_second_apply_changes_nothing(three: tuple[hklab.Lab, Path]) -> None:
    _, config = three
    res = run_cli("apply", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert changes(config) == 0
    # `plan -o json` shows the same nothing per host
    res = run_cli("plan", "--config", str(config), "--output", "json")
    per_host = json.loads(res.stdout)["hosts"]
    assert all(not v["changes"] for v in per_host.values()), shlex.quote(res.stdout[:500])
