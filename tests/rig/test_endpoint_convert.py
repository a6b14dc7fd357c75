"""A running 1-control-plane cluster converted to 3 control planes on a virtual address by `apply`.

Four lab hosts: h1 (control plane + etcd) and h4 (worker) run a cluster whose API is h1's own
address; h2 and h3 are up but not in cluster.yaml yet. A Deployment of the lab's hkecho server
(2 replicas, readiness probe) answers behind a Service while a client on h1 sends it a request
every ~50 ms through kube-proxy. On that running cluster the issue's refusals are checked first
(an even number of etcd members, an endpoint address off the hosts' network, removing the last
control plane): each is refused by `plan` and `apply` with its reason, and nothing on the hosts
or in the cluster changed. Then cluster.yaml gets `kubernetes.endpoint` and h2, h3 with the
control-plane and etcd roles: `plan` must show the conversion in order (h1's API server restarts
with the three etcd members only after h2 and h3 joined) and `apply` must do it while probers on
this machine call the old address (h1:6443) and, once it answers, the virtual one every 200 ms
(their longest gaps are printed, not asserted). Afterwards every
kubeconfig (admin.conf, the worker's kubelet.conf, kube-proxy's, cluster-info's and the one
`homekube kubeconfig` handed out) points at the virtual address, three API servers are ready on
three etcd members, every --etcd-servers lists the three, the client saw no failed request,
and a second `plan` has nothing to do. Last, an extra SAN in cluster.yaml re-issues the three
API server certificates without restarting any API server (kube-apiserver reloads its serving
certificate from disk).
"""

from __future__ import annotations

import itertools
import json
import shlex
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from homekube import lab as hklab
from homekube.lab import settings
from tests.rig.helpers import run_cli, run_on, sh, wait_for
from tests.rig.test_k8s_upgrade import CLIENT_UNIT, client_counts, client_script, workload

pytestmark = pytest.mark.rig

VIP = f"{settings.NET4_PREFIX}.250"
H1 = f"{settings.NET4_PREFIX}.11"
OLD = f"https://{H1}:6443"
NEW = f"https://{VIP}:6443"
HOSTS = ("h1", "h2", "h3", "h4")
CPS = ("h1", "h2", "h3")
KUBECTL = "kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=20s"


def derive(base: str, roles: dict[str, str], *, endpoint: str | None = None,
           extra_k8s: str = "") -> str:
    """The lab's cluster.yaml with `roles` (hosts not named are left out), the lab's
    controlPlaneEndpoint removed or replaced by `endpoint`."""
    out = []
    for ln in base.splitlines():
        s = ln.lstrip()
        if s.startswith("controlPlaneEndpoint:"):
            if endpoint is None:
                continue
            ln = f"  endpoint: {{kind: vip, address: {endpoint}}}"
        if s.startswith("runtime:") and extra_k8s:
            out.append(extra_k8s)
        if s.startswith("- {name: h"):
            name = s.split(",")[0].removeprefix("- {name: ")
            if name not in roles:
                continue
            ln = ln.split("roles:")[0] + f"roles: [{roles[name]}]}}"
        out.append(ln)
    return "\n".join(out) + "\n"


ONE = {"h1": "control-plane, etcd", "h4": "worker"}
THREE = {"h1": "control-plane, etcd", "h2": "control-plane, etcd", "h3": "control-plane, etcd",
         "h4": "worker"}


def kubectl(args: str, *, input: str | None = None) -> str:
    return sh("h1", f"{KUBECTL} {args}", input=input)


def ready_nodes() -> dict[str, bool]:
    res = run_on("h1", f"{KUBECTL} get nodes -o json", ok=False)
    if res.returncode != 0:
        return {}
    out = {}
    for n in json.loads(res.stdout)["items"]:
        conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
        out[n["metadata"]["name"]] = conds.get("Ready") == "True"
    return out


def changes(config: Path) -> int:
    res = run_cli("plan", "--config", str(config), "--output", "json", timeout=900)
    assert res.returncode in (0, 4), res.stdout[-2000:] + res.stderr[-3000:]
    return int(json.loads(res.stdout)["changes"])


def rolled_out() -> None:
    res = run_on("h1", f"{KUBECTL} rollout status deployment/web --timeout=300s", ok=False, timeout=330)
    assert res.returncode == 0, res.stdout + res.stderr + sh("h1", f"{KUBECTL} get pods -o wide", ok=False)


def fingerprint(handed: Path) -> str:
    """What a refused plan or apply must not change: kubeconfigs, manifests, the API server
    certificate, keepalived, units, etcd members, the cluster's copies, the handed-out file."""
    out = []
    for h in HOSTS:
        out.append(h + ": " + sh(h, (
            "sha256sum /etc/kubernetes/*.conf /etc/kubernetes/manifests/*.yaml "
            "/etc/kubernetes/pki/apiserver.crt 2>/dev/null; ls /etc/keepalived 2>&1; "
            "for u in keepalived etcd kubelet; do echo $u $(systemctl is-active $u); done; "
            "dpkg -l keepalived 2>/dev/null | grep -c ^ii; true")))
    out.append(sh("h1", "set -a; . /etc/etcd/etcdctl.env; etcdctl member list 2>&1 | cut -d, -f1,3"))
    out.append(kubectl("-n kube-system get configmap kubeadm-config kube-proxy "
                       "-o jsonpath='{range .items[*]}{.metadata.resourceVersion} {end}'"))
    out.append(kubectl("-n kube-public get configmap cluster-info -o jsonpath='{.metadata.resourceVersion}'"))
    out.append(handed.read_text())
    return "\n".join(out)


@pytest.fixture(scope="module")
def one_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    d = tmp_path_factory.mktemp("convert")
    base = d / "lab.yaml"
    hklab.down()
    lab = hklab.up(4, config_path=base, kubernetes=True)
    config = d / "cluster.yaml"
    config.write_text(derive(base.read_text(), ONE))
    try:
        t0 = time.monotonic()
        res = run_cli("apply", "--config", str(config), timeout=3000)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        print(f"\n1 control plane (h1) + 1 worker (h4): apply took {time.monotonic() - t0:.0f}s")
        yield lab, d
    finally:
        hklab.down()


def _refused(config: Path, text: str, want: str, handed: Path, before: str) -> None:
    config.write_text(text)
    for verb in ("plan", "apply"):
        res = run_cli(verb, "--config", str(config), timeout=900)
        assert res.returncode not in (0, 4), f"{verb} was not refused: {res.stdout[-2000:]}"
        assert want in res.stderr, (verb, res.stderr[-3000:])
        assert "Traceback" not in res.stderr + res.stdout
        said = next(ln for ln in res.stderr.splitlines() if want in ln)
        print(f"  {verb} refused: {said.strip()[:200]}")
    assert fingerprint(handed) == before, f"{config.name}: something changed"


def _ca_context() -> ssl.SSLContext:
    return ssl.create_default_context(cadata=sh("h1", "cat /etc/kubernetes/pki/ca.crt"))


def _readyz(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1, context=ctx) as r:
            return bool(r.status == 200 and r.read() == b"ok")
    except OSError:
        return False


def _apiserver_started(h: str) -> str:
    return sh(h, "ps -o lstart= -p $(pgrep -f '^kube-apiserver ' | head -n1)").strip()


@pytest.mark.timeout(5400)
def test_one_control_plane_becomes_three_on_the_virtual_address(one_cp: tuple[hklab.Lab, Path]) -> None:
    lab, d = one_cp
    assert lab.artifacts is not None
    base = (d / "lab.yaml").read_text()
    config = d / "cluster.yaml"
    one = config.read_text()
    wait_for("h1 and h4 Ready", lambda: ready_nodes() == {"h1": True, "h4": True}, seconds=600, every=3)
    assert f"server: {OLD}" in sh("h1", "cat /etc/kubernetes/admin.conf")

    # a workload behind a Service, and a handed-out kubeconfig
    kubectl("apply -f -", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                            "items": workload(lab.artifacts.hkecho_image)}))
    rolled_out()
    res = run_cli("kubeconfig", "--config", str(config), "--out", str(d / "admin.kubeconfig"), timeout=300)
    assert res.returncode == 0, res.stderr
    handed = d / "admin.kubeconfig"
    assert f"server: {OLD}" in handed.read_text()

    # refused on the running cluster, before any change
    before = fingerprint(handed)
    print("\nrefusals:")
    even = derive(base, {"h1": "control-plane, etcd", "h2": "control-plane, etcd", "h4": "worker"},
                  endpoint=VIP)
    _refused(d / "even.yaml", even, "use an odd count", handed, before)
    off = derive(base, THREE, endpoint="10.250.0.250")
    _refused(d / "off.yaml", off, f"10.250.0.250 is not on h1's network {settings.NET4_PREFIX}.0/24",
             handed, before)
    last = derive(base, {"h1": "etcd, worker", "h2": "control-plane", "h4": "worker"})
    _refused(d / "last.yaml", last, "h1 runs a control plane", handed, before)
    config.write_text(one)
    assert changes(config) == 0

    # the client: one request after another from h1, through kube-proxy, to the two pods
    ip = kubectl("get service web -o jsonpath={.spec.clusterIP}").strip()
    run_on("h1", f"systemd-run --unit {CLIENT_UNIT} --collect bash -c {shlex.quote(client_script(ip))}")
    wait_for("the client's first answers", lambda: client_counts()[0] >= 20, seconds=120)
    assert not client_counts()[1]

    # the conversion: plan shows it in order
    config.write_text(derive(base, THREE, endpoint=VIP))
    res = run_cli("plan", "--config", str(config), "--output", "json", timeout=900)
    assert res.returncode in (0, 4), res.stdout[-2000:] + res.stderr[-3000:]
    data = json.loads(res.stdout)
    phases = data["phases"]
    order = sorted((phases.index(c["phase"]), c["wave"], h, c["phase"], c["resource"])
                   for h, v in data["hosts"].items() for c in v["changes"])
    print("\nconversion plan (phase, wave, host, resource):")
    for o in order:
        if o[3] in ("etcd", "endpoint", "kubeadm"):
            print(f"  {o[3]} {o[1]} {o[2]} {o[4]}")
    at = {(ph, h, r): (i, w) for i, w, h, ph, r in order}
    assert ("etcd", "h1", "member h2") in at and ("etcd", "h1", "member h3") in at, at
    assert at[("etcd", "h1", "member h3")] < at[("endpoint", "h1", "address")]
    steps_h1 = [c["resource"] for c in data["hosts"]["h1"]["changes"] if c["phase"] == "endpoint"]
    assert steps_h1[-1] == "address", steps_h1  # after keepalived runs there
    assert all(("endpoint", h, "unit keepalived.service") in at for h in CPS), at
    kub = {(h, r): w for (ph, h, r), (_, w) in at.items() if ph == "kubeadm"}
    assert kub[("h1", "kubeadm-config")] < kub[("h1", "apiserver certificate")] \
        < kub[("h1", "/etc/kubernetes/admin.conf")]
    kc = kub[("h1", "/etc/kubernetes/admin.conf")]
    for key in (("h1", "/etc/kubernetes/super-admin.conf"), ("h4", "/etc/kubernetes/kubelet.conf"),
                ("h1", "configmap kube-system/kube-proxy"), ("h1", "configmap kube-public/cluster-info"),
                ("h1", f"kubeconfig {handed}")):
        assert kub[key] == kc, (key, kub)
    assert kc < kub[("h1", "bootstrap token")] < kub[("h2", "join")] < kub[("h3", "join")] \
        < kub[("h1", "kube-apiserver manifest")], kub  # h1's restart: after h2, h3 serve

    # apply, with probers on the old address and on the virtual one (once it answers)
    ca = _ca_context()
    probes: dict[str, list[tuple[float, bool]]] = {OLD: [], NEW: []}
    stop = threading.Event()

    def prober(url: str) -> None:
        while not stop.is_set():
            t = time.monotonic()
            probes[url].append((t, _readyz(url, ca)))
            time.sleep(max(0.0, 0.2 - (time.monotonic() - t)))

    threads = [threading.Thread(target=prober, args=(u,), daemon=True) for u in probes]
    for th in threads:
        th.start()
    t0 = time.monotonic()
    try:
        res = run_cli("apply", "--config", str(config), timeout=3600)
    finally:
        took = time.monotonic() - t0
        t_end = time.monotonic()
        stop.set()
        for th in threads:
            th.join(timeout=5)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-4000:]
    print(f"\nconversion apply took {took:.0f}s")
    for url, start in ((OLD, t0), (NEW, None)):
        ok_times = [t for t, ok in probes[url] if ok]
        if start is None:  # the virtual address: from its first verified answer on
            assert ok_times, f"{url} never answered /readyz during the apply"
            start = ok_times[0]
        seen = [(t, ok) for t, ok in probes[url] if t >= start]
        gap = max((b - a for a, b in itertools.pairwise([start, *ok_times, t_end]) if b >= start),
                  default=0.0)
        failed = sum(1 for _, ok in seen if not ok)
        print(f"  {url}: {failed} of {len(seen)} probes failed, longest gap between answers "
              f"{gap:.1f}s")

    # the workload served throughout
    wait_for("four nodes Ready", lambda: ready_nodes() == dict.fromkeys(HOSTS, True), seconds=600, every=3)
    rolled_out()
    run_on("h1", f"systemctl stop {CLIENT_UNIT}")
    total, fails, per_node = client_counts()
    print(f"client during the conversion: {len(fails)} failed of {total} requests; answers per node {per_node}")
    for ln in fails[:20]:
        print(f"  {ln}")
    assert total > 100, total
    assert not fails, f"{len(fails)} failed of {total}: {fails[:10]}"

    # every kubeconfig points at the endpoint
    for h in CPS:
        assert f"server: {NEW}" in sh(h, "cat /etc/kubernetes/admin.conf"), h
    assert f"server: {NEW}" in sh("h1", "cat /etc/kubernetes/super-admin.conf")
    assert f"server: {NEW}" in sh("h4", "cat /etc/kubernetes/kubelet.conf")
    assert f"server: {NEW}" in kubectl("-n kube-system get configmap kube-proxy -o jsonpath='{.data.kubeconfig\\.conf}'")
    assert f"server: {NEW}" in kubectl("-n kube-public get configmap cluster-info -o jsonpath='{.data.kubeconfig}'")
    assert f"server: {NEW}" in handed.read_text()
    cluster_cfg = kubectl("-n kube-system get configmap kubeadm-config -o jsonpath='{.data.ClusterConfiguration}'")
    assert f"controlPlaneEndpoint: {VIP}:6443" in cluster_cfg, cluster_cfg

    # three API servers on three etcd members, reachable through the address
    etcd = ",".join(f"https://{settings.NET4_PREFIX}.1{i}:2379" for i in (1, 2, 3))
    for h in CPS:
        assert sh(h, "curl -sk --max-time 5 https://127.0.0.1:6443/readyz").strip() == "ok", h
        assert f"--etcd-servers={etcd}" in sh(h, "cat /etc/kubernetes/manifests/kube-apiserver.yaml"), h
        assert f"--etcd-servers={etcd}" in sh(h, "ps -eo args | grep '^kube-apiserver '"), h
    status = json.loads(run_cli("status", "--config", str(config), "--output", "json", timeout=300).stdout)
    assert status["etcd"]["healthy"] == 3, status["etcd"]
    assert status["endpoint"]["answers"] and status["endpoint"]["apiServersReady"], status["endpoint"]
    assert _readyz(NEW, ca), "the API does not answer through the virtual address (TLS verified)"
    sans = sh("h1", "openssl x509 -noout -ext subjectAltName -in /etc/kubernetes/pki/apiserver.crt")
    assert f"IP Address:{VIP}" in sans, sans
    assert changes(config) == 0

    # an extra SAN: the three certificates are re-issued, no API server restarts
    started = {h: _apiserver_started(h) for h in CPS}
    config.write_text(derive(base, THREE, endpoint=VIP, extra_k8s="  certSans: [api.lab.test]"))
    t1 = time.monotonic()
    res = run_cli("apply", "--config", str(config), timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    print(f"extra SAN: apply took {time.monotonic() - t1:.0f}s")
    for h in CPS:
        served = sh(h, "openssl s_client -connect 127.0.0.1:6443 </dev/null 2>/dev/null "
                       "| openssl x509 -noout -ext subjectAltName")
        assert "DNS:api.lab.test" in served, (h, served)
        assert _apiserver_started(h) == started[h], f"{h}: kube-apiserver restarted"
    assert changes(config) == 0
