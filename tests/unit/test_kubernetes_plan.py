"""The Kubernetes layer planned against synthetic facts (pure), plus the pieces around it.

Validated, not executed: no kubeadm, kubelet, CRI-O or Calico can run here. What runs for real:
the generated shell for the artifact check and the Calico download (bash + curl against a
loopback HTTP server), and kube.py against a fake API (httpx2.MockTransport).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import io
import json
import re
import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from rich.console import Console
from ruamel.yaml import YAML

from homekube.cli.output import print_plan
from homekube.components import kubernetes as k8s
from homekube.components.base import Context, LocalState
from homekube.components.kubernetes import (
    ADMIN_CONF,
    CA_CRT,
    CA_KEY,
    CALICO_DIR,
    CLUSTER_DIR,
    INIT_CONFIG,
    JOIN_CONFIG,
    KUBELET_CONF,
    LAYER_OFF,
    TOKEN_CONFIG,
    UPLOAD_CERTS_CONFIG,
    KubeFacts,
    ca_cert_hash,
    cluster_files,
    kubernetes_phases,
    parse_kube_fact,
)
from homekube.components.planner import build_plan
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.errors import HomekubeError
from homekube.facts.host import HostFacts
from homekube.facts.system import FileState, OsInfo, PackageState, UnitState
from homekube.kube import Kube, api_client, deployment_progress
from homekube.ops.kubernetes import operator_kubeconfig, write_cluster_objects
from homekube.pki.issue import generate_key, issue_ca
from homekube.plan.model import Change, NoChange, Plan, Run, Step, WriteFile
from homekube.render.kubernetes import (
    CALICO_MANIFESTS,
    CRIO_DROPIN_PATH,
    REDACTED_TOKEN,
    crio_dropin,
    repo_files,
)
from tests.conftest import GOOD
from tests.unit.factsgen import debian12
from tests.unit.waves import wave_of

NOW = datetime(2026, 11, 25, tzinfo=UTC)
OPERATOR = "quay.io/tigera/operator:v1.42.3"
CFG = load_text(GOOD)  # krusty: control-plane + etcd + worker; bart: worker
TOKEN_RE = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")

CONTAINERD = load_text(GOOD.replace('kubernetes: {version: "1.36"',
                                   'kubernetes: {runtime: containerd, version: "1.36"'))

OFF = load_text(GOOD.replace('kubernetes: {version: "1.36"',
                            'kubernetes: {enabled: false, version: "1.36"'))

HA = """\
name: ha
kubernetes: {version: "1.36", controlPlaneEndpoint: "k8s.home.arpa:6443"}
network: {pods: [10.42.0.0/16], services: [10.96.0.0/16]}
hosts:
  - {name: cp1, address: 192.0.2.21, roles: [control-plane, etcd]}
  - {name: cp2, address: 192.0.2.22, roles: [control-plane, etcd]}
  - {name: cp3, address: 192.0.2.23, roles: [control-plane, etcd]}
  - {name: w1, address: 192.0.2.31, roles: [worker]}
"""


# ---------------------------------------------------------------------------------------------
# fact builders


def fstate(path: str, content: bytes = b"x", mode: int = 0o644) -> FileState:
    return FileState(path, mode, "root", "root", len(content), hashlib.sha256(content).hexdigest(),
                     content)


def host(cfg: ClusterConfig, name: str) -> HostFacts:
    h = cfg.host(name)
    v6 = str(h.ipv6) if h.ipv6 else None
    return debian12(name, v4=str(h.address), v6=v6)


def installed(cfg: ClusterConfig, f: HostFacts, **kube: Any) -> HostFacts:
    """A node on which k8s-packages has run (Debian)."""
    files = dict(f.files)
    for rf in repo_files(cfg, "debian"):
        files[rf.path] = fstate(rf.path, rf.content.encode())
        assert rf.keyring
        files[rf.keyring] = fstate(rf.keyring, b"\x99key")
    files[CRIO_DROPIN_PATH] = fstate(CRIO_DROPIN_PATH, crio_dropin(cfg).encode())
    pkgs = {p: PackageState(p, "1.36.4-1.1") for p in ("cri-o", "kubelet", "kubeadm", "kubectl")}
    units = {"crio.service": UnitState("crio.service", "loaded", "active", "enabled"),
             "kubelet.service": UnitState("kubelet.service", "loaded", "active", "enabled")}
    kf = KubeFacts(**{"kubeadm": "v1.36.4", "held": frozenset(pkgs), **kube})
    return replace(f, files=files, packages={**f.packages, **pkgs}, units={**f.units, **units},
                   extra={**f.extra, "kubernetes": kf})


def with_files(f: HostFacts, *states: FileState) -> HostFacts:
    return replace(f, files={**f.files, **{s.path: s for s in states}})


def cluster_ca() -> tuple[bytes, bytes]:
    key = generate_key("ecdsa-p256")
    return issue_ca(k8s.kubernetes_ca_spec(), key, NOW), key


def running_cp(cfg: ClusterConfig, name: str, ca_pem: bytes, **kube: Any) -> HostFacts:
    """An initialised control plane whose API answers."""
    f = installed(cfg, host(cfg, name), readyz="ok", **kube)
    return with_files(f, fstate(ADMIN_CONF, b"", 0o600), fstate(KUBELET_CONF, b"", 0o600),
                      fstate(CA_CRT, ca_pem), fstate(CA_KEY, b"", 0o600))


def joined(cfg: ClusterConfig, name: str) -> HostFacts:
    return with_files(installed(cfg, host(cfg, name)), fstate(KUBELET_CONF, b"", 0o600))


def ctx_of(cfg: ClusterConfig, facts: dict[str, HostFacts]) -> Context:
    return Context(cfg, facts, LocalState(), NOW)


def plan_of(cfg: ClusterConfig, facts: dict[str, HostFacts]) -> Plan:
    return build_plan(kubernetes_phases(), ctx_of(cfg, facts))


def changes(p: Plan, phase: str, host: str | None = None) -> list[Change]:
    return [c for ph in p.phases if ph.name == phase for c in ph.changes
            if host is None or c.host == host]


def steps(p: Plan, phase: str) -> list[Step]:
    return [s for ph in p.phases if ph.name == phase for s in ph.steps]


def by_resource(cs: list[Change], resource: str) -> list[Change]:
    return [c for c in cs if c.resource == resource]


def runs(c: Change) -> list[str]:
    return [a.command for a in c.actions if isinstance(a, Run)]


def writes(c: Change) -> dict[str, WriteFile]:
    return {a.path: a for a in c.actions if isinstance(a, WriteFile)}


def yaml_docs(text: bytes) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(text.decode()) if d is not None]


def fresh_pair() -> dict[str, HostFacts]:
    return {"krusty": host(CFG, "krusty"), "bart": host(CFG, "bart")}


# ---------------------------------------------------------------------------------------------
# layer off


def test_layer_off_is_only_nochange_per_host() -> None:
    cfg = OFF
    p = plan_of(cfg, fresh_pair())
    assert [ph.name for ph in p.phases] == ["k8s-packages", "endpoint", "kubeadm", "calico", "flannel",
                                            "ui"]
    assert p.changes == []
    for ph in p.phases:
        assert all(isinstance(s, NoChange) and not s.warning for s in ph.steps)
        assert [(s.host, getattr(s, "reason", "")) for s in ph.steps] == [
            ("krusty", LAYER_OFF), ("bart", LAYER_OFF)]
    for phase in kubernetes_phases():
        probes = phase.probes(cfg, cfg.hosts[0])
        assert not probes.files and not probes.extra  # nothing gathered for an unused layer


# ---------------------------------------------------------------------------------------------
# kubeadm


def test_fresh_control_plane_inits_with_exact_command_and_config_file() -> None:
    p = plan_of(CFG, fresh_pair())
    kc = changes(p, "kubeadm", "krusty")
    (ca,) = by_resource(kc, "cluster CA")
    (init,) = by_resource(kc, "kubeadm init")
    assert ca.order == init.order == k8s.INIT and kc.index(ca) < kc.index(init)
    assert wave_of(changes(p, "kubeadm"))(init) == 0
    ca_files = writes(ca)
    assert ca_files[CA_CRT].mode == 0o644 and not ca_files[CA_CRT].secret
    assert ca_files[CA_KEY].mode == 0o600 and ca_files[CA_KEY].secret
    files = writes(init)
    conf = files[INIT_CONFIG]
    assert conf.mode == 0o600 and conf.secret and conf.owner == "root"
    cmds = runs(init)
    assert f"kubeadm config validate --config {INIT_CONFIG}" in cmds
    (kinit,) = [c for c in cmds if "kubeadm init --config" in c]
    assert (f"kubeadm init --config {INIT_CONFIG} --skip-token-print --skip-certificate-key-print "
            ">/var/log/homekube/kubeadm-init.log 2>&1") in kinit
    assert "--upload-certs" not in kinit  # one control plane: nothing to share
    docs = yaml_docs(conf.content)
    assert [d["kind"] for d in docs] == ["InitConfiguration", "ClusterConfiguration",
                                         "KubeletConfiguration", "KubeProxyConfiguration"]
    init_doc = docs[0]
    (tok,) = init_doc["bootstrapTokens"]
    assert TOKEN_RE.fullmatch(tok["token"]) and tok["token"] != REDACTED_TOKEN
    assert tok["ttl"] == "15m0s"
    assert init_doc["nodeRegistration"]["taints"] == []  # control plane + worker: untainted
    assert docs[1]["etcd"]["external"]["endpoints"] == ["https://192.0.2.54:2379"]
    # minor-only version and no kubeadm yet: pinned to the installed kubeadm at apply time
    assert docs[1]["kubernetesVersion"] == "stable-1.36"
    assert any('sed -i "s/^kubernetesVersion: .*/kubernetesVersion: $v/"' in c for c in cmds)
    # the plan shows the file, with the token replaced by a placeholder
    assert init.diff and REDACTED_TOKEN in init.diff and tok["token"] not in init.diff
    assert "kubeadm init --config /etc/kubernetes/homekube/kubeadm-init.yaml" in init.summary


def test_installed_kubeadm_pins_the_version_in_the_file() -> None:
    facts = {n: installed(CFG, host(CFG, n)) for n in ("krusty", "bart")}
    (init,) = by_resource(changes(plan_of(CFG, facts), "kubeadm", "krusty"), "kubeadm init")
    assert yaml_docs(writes(init)[INIT_CONFIG].content)[1]["kubernetesVersion"] == "v1.36.4"
    assert not any("sed -i" in c for c in runs(init))


def test_worker_joins_after_init_with_the_token_and_ca_pin() -> None:
    p = plan_of(CFG, fresh_pair())
    (init,) = by_resource(changes(p, "kubeadm", "krusty"), "kubeadm init")
    (ca,) = by_resource(changes(p, "kubeadm", "krusty"), "cluster CA")
    (join,) = changes(p, "kubeadm", "bart")
    wave = wave_of(changes(p, "kubeadm"))
    assert wave(join) > wave(init)  # the token is created by init
    conf = writes(join)[JOIN_CONFIG]
    assert conf.secret and conf.mode == 0o600
    (doc,) = yaml_docs(conf.content)
    init_token = yaml_docs(writes(init)[INIT_CONFIG].content)[0]["bootstrapTokens"][0]["token"]
    bt = doc["discovery"]["bootstrapToken"]
    assert bt["token"] == init_token
    assert bt["caCertHashes"] == [ca_cert_hash(writes(ca)[CA_CRT].content)]
    assert bt["apiServerEndpoint"] == "k8s.home.arpa:6443"
    assert "controlPlane" not in doc
    cmds = runs(join)
    assert any(f"kubeadm join --config {JOIN_CONFIG} >/var/log/homekube/kubeadm-join.log" in c
               for c in cmds)
    assert any(f"rm -f {JOIN_CONFIG}" in c for c in cmds)


def test_initialised_cluster_is_nochange() -> None:
    ca_pem, _ = cluster_ca()
    facts = {"krusty": running_cp(CFG, "krusty", ca_pem), "bart": joined(CFG, "bart")}
    p = plan_of(CFG, facts)
    assert changes(p, "kubeadm") == []
    reasons = {s.host: s.reason for s in steps(p, "kubeadm")
               if isinstance(s, NoChange) and s.resource in ("kubeadm init", "join")}
    assert "cluster initialised" in reasons["krusty"] and "/readyz" in reasons["krusty"]
    assert "has joined" in reasons["bart"]
    assert changes(p, "k8s-packages", "bart") == []


def test_new_worker_joins_in_a_later_wave_than_the_token() -> None:
    ca_pem, _ = cluster_ca()
    facts = {"krusty": running_cp(CFG, "krusty", ca_pem), "bart": installed(CFG, host(CFG, "bart"))}
    p = plan_of(CFG, facts)
    (tok,) = by_resource(changes(p, "kubeadm", "krusty"), "bootstrap token")
    (join,) = changes(p, "kubeadm", "bart")
    wave = wave_of(changes(p, "kubeadm"))
    assert wave(tok) < wave(join)
    token_file = writes(tok)[TOKEN_CONFIG]
    assert token_file.secret and token_file.mode == 0o600
    (tdoc,) = yaml_docs(token_file.content)
    token = tdoc["bootstrapTokens"][0]["token"]
    assert tdoc["bootstrapTokens"][0]["ttl"] == "15m0s"
    (cmd,) = runs(tok)
    assert cmd.startswith(f"kubeadm token create --config {TOKEN_CONFIG} >/dev/null")
    assert token not in cmd  # never in argv
    (jdoc,) = yaml_docs(writes(join)[JOIN_CONFIG].content)
    assert jdoc["discovery"]["bootstrapToken"]["token"] == token
    # the pin comes from the running cluster's CA (a fact), not from a new CA
    assert jdoc["discovery"]["bootstrapToken"]["caCertHashes"] == [ca_cert_hash(ca_pem)]
    assert not by_resource(changes(p, "kubeadm", "krusty"), "cluster CA")


def test_three_control_planes_share_a_certificate_key() -> None:
    cfg = load_text(HA)
    facts = {n: host(cfg, n) for n in ("cp1", "cp2", "cp3", "w1")}
    p = plan_of(cfg, facts)
    (init,) = by_resource(changes(p, "kubeadm", "cp1"), "kubeadm init")
    assert any("--upload-certs" in c for c in runs(init))
    key = yaml_docs(writes(init)[INIT_CONFIG].content)[0]["certificateKey"]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    joins = {c.host: c for c in changes(p, "kubeadm") if c.resource == "join"}
    for cp in ("cp2", "cp3"):
        (doc,) = yaml_docs(writes(joins[cp])[JOIN_CONFIG].content)
        assert doc["controlPlane"]["certificateKey"] == key
        addr = doc["controlPlane"]["localAPIEndpoint"]["advertiseAddress"]
        assert addr == cfg.host(cp).address.exploded
    (wdoc,) = yaml_docs(writes(joins["w1"])[JOIN_CONFIG].content)
    assert "controlPlane" not in wdoc
    # control planes one after another, workers after them; all after init
    wave = wave_of(changes(p, "kubeadm"))
    assert wave(init) < wave(joins["cp2"]) < wave(joins["cp3"]) < wave(joins["w1"])
    assert key not in (joins["cp2"].diff or "") and "0" * 64 in (joins["cp2"].diff or "")
    # cp1 is a plain control plane here: kubeadm keeps its taint
    assert yaml_docs(writes(init)[INIT_CONFIG].content)[0]["nodeRegistration"].get("taints") is None


def test_new_control_plane_in_running_cluster_uploads_certs_first() -> None:
    cfg = load_text(HA)
    ca_pem, _ = cluster_ca()
    facts = {"cp1": running_cp(cfg, "cp1", ca_pem), "cp2": joined(cfg, "cp2"),
             "cp3": installed(cfg, host(cfg, "cp3")), "w1": joined(cfg, "w1")}
    p = plan_of(cfg, facts)
    cp1 = changes(p, "kubeadm", "cp1")
    (up,) = by_resource(cp1, "upload-certs")
    (tok,) = by_resource(cp1, "bootstrap token")
    (join,) = changes(p, "kubeadm", "cp3")
    wave = wave_of(changes(p, "kubeadm"))
    assert wave(up) == wave(tok) < wave(join)
    conf = writes(up)[UPLOAD_CERTS_CONFIG]
    key = yaml_docs(conf.content)[0]["certificateKey"]
    assert conf.secret and key not in " ".join(runs(up))
    want = f"kubeadm init phase upload-certs --upload-certs --config {UPLOAD_CERTS_CONFIG}"
    assert want in runs(up)[0]
    (doc,) = yaml_docs(writes(join)[JOIN_CONFIG].content)
    assert doc["controlPlane"]["certificateKey"] == key
    assert yaml_docs(conf.content)[1]["kubernetesVersion"] == "v1.36.4"


def test_api_down_never_reinits() -> None:
    ca_pem, _ = cluster_ca()
    f = running_cp(CFG, "krusty", ca_pem)
    down = KubeFacts(kubeadm="v1.36.4", readyz="connection refused")
    f = replace(f, extra={**f.extra, "kubernetes": down})
    p = plan_of(CFG, {"krusty": f, "bart": installed(CFG, host(CFG, "bart"))})
    assert changes(p, "kubeadm") == changes(p, "calico") == changes(p, "ui") == []
    warn = [s for s in steps(p, "kubeadm") if isinstance(s, NoChange) and s.warning]
    assert any("will not run kubeadm init again" in s.reason for s in warn)
    assert any(s.host == "bart" and "waits for the API" in s.reason for s in warn)


def test_secrets_never_appear_in_json_describe_or_text() -> None:
    p = plan_of(load_text(HA), {n: host(load_text(HA), n) for n in ("cp1", "cp2", "cp3", "w1")})
    secrets: set[str] = set()
    for c in p.changes:
        for a in c.actions:
            if isinstance(a, WriteFile) and a.secret:
                text = a.content.decode()
                secrets |= set(TOKEN_RE.findall(text)) - {REDACTED_TOKEN}
                secrets |= {m for m in re.findall(r"certificateKey: ([0-9a-f]{64})", text)}
                if "PRIVATE KEY" in text:
                    secrets.add(text.strip().splitlines()[1])
    assert len(secrets) >= 3  # token, certificate key, CA key
    shown = json.dumps(p.to_json())
    shown += "".join(a.describe() for c in p.changes for a in c.actions)
    buf = io.StringIO()
    print_plan(Console(file=buf, width=200), p, verbose=True)
    shown += buf.getvalue()
    for s in secrets:
        assert s not in shown
    assert REDACTED_TOKEN in shown  # the files are shown, with placeholders


# ---------------------------------------------------------------------------------------------
# packages and the artifact check


def test_fresh_node_gets_repos_crio_and_held_packages() -> None:
    p = plan_of(CFG, fresh_pair())
    cs = changes(p, "k8s-packages", "bart")
    res = [c.resource for c in cs]
    assert res[0] == "artifacts"
    assert "file /etc/apt/sources.list.d/kubernetes.list" in res
    assert "keyring /etc/apt/keyrings/kubernetes-apt-keyring.gpg" in res
    assert f"file {CRIO_DROPIN_PATH}" in res
    (pk,) = by_resource(cs, "packages")
    cmd = runs(pk)[0]
    assert "apt-get install" in cmd and "'cri-o' 'kubeadm' 'kubectl' 'kubelet'" in cmd
    assert "apt-mark hold 'cri-o' 'kubelet' 'kubeadm' 'kubectl'" in cmd
    assert res.index("file /etc/apt/sources.list.d/kubernetes.list") < res.index("packages")
    assert res.index(f"file {CRIO_DROPIN_PATH}") < res.index("unit crio.service")
    assert all(c.order == k8s.INSTALL for c in cs if c.resource != "artifacts")


def test_el_node_uses_excludes_and_container_selinux() -> None:
    rocky = OsInfo("rocky", "9.4", ("rhel", "centos", "fedora"), "Rocky Linux 9.4")
    f = replace(host(CFG, "bart"), os=rocky)
    p = plan_of(CFG, {"krusty": host(CFG, "krusty"), "bart": f})
    cs = changes(p, "k8s-packages", "bart")
    (repo,) = by_resource(cs, "file /etc/yum.repos.d/kubernetes.repo")
    content = writes(repo)["/etc/yum.repos.d/kubernetes.repo"].content
    assert b"exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni" in content
    (pk,) = by_resource(cs, "packages")
    assert ("; dnf install -y -q --disableexcludes=kubernetes "
            "'container-selinux' 'cri-o' 'kubeadm' 'kubectl' 'kubelet' && ") in runs(pk)[0]
    # what the install added is recorded, so that reset and node removal remove it again
    assert runs(pk)[0].endswith(">> /var/lib/homekube/packages; rc=$?; rm -f \"$hk_before\"; exit $rc")
    assert not [c for c in cs if c.resource.startswith("keyring")]


def test_converged_node_has_no_package_changes_and_drift_restarts_crio() -> None:
    f = installed(CFG, host(CFG, "bart"))
    p = plan_of(CFG, {"krusty": installed(CFG, host(CFG, "krusty")), "bart": f})
    assert changes(p, "k8s-packages", "bart") == []
    other = b'[crio.runtime]\ncgroup_manager = "cgroupfs"\n'
    drift = with_files(f, fstate(CRIO_DROPIN_PATH, other))
    p = plan_of(CFG, {"krusty": installed(CFG, host(CFG, "krusty")), "bart": drift})
    res = [c.resource for c in changes(p, "k8s-packages", "bart")]
    assert res == [f"file {CRIO_DROPIN_PATH}", "unit crio.service"]
    assert "systemctl restart crio.service" in runs(changes(p, "k8s-packages", "bart")[1])


def test_wrong_minor_is_a_warning_not_an_upgrade() -> None:
    f = installed(CFG, host(CFG, "bart"))
    f = replace(f, packages={**f.packages, "kubelet": PackageState("kubelet", "1.35.2-1.1")})
    p = plan_of(CFG, {"krusty": installed(CFG, host(CFG, "krusty")), "bart": f})
    (w,) = [s for s in steps(p, "k8s-packages") if isinstance(s, NoChange) and s.warning]
    assert "kubelet 1.35.2-1.1" in w.reason and "1.36" in w.reason


def test_artifact_check_runs_first_on_the_first_control_plane_and_uses_the_mirror() -> None:
    cfg = load_text(GOOD.replace("artifacts: {mirror: null}", "artifacts: {mirror: 'http://192.0.2.1:8081/'}"))
    p = plan_of(cfg, {"krusty": host(cfg, "krusty"), "bart": host(cfg, "bart")})
    (first,) = by_resource(changes(p, "k8s-packages", "krusty"), "artifacts")
    (other,) = by_resource(changes(p, "k8s-packages", "bart"), "artifacts")
    assert first.order == k8s.CHECK_FIRST and other.order == k8s.CHECK
    wave = wave_of(changes(p, "k8s-packages"))
    assert (wave(first), wave(other)) == (0, 1)
    assert {wave(c) for c in changes(p, "k8s-packages") if c.resource != "artifacts"} == {2}
    set_args = next(ln for ln in runs(first)[0].splitlines() if ln.startswith("set -- "))
    urls = shlex.split(set_args)[2:]
    assert urls == [
        "http://192.0.2.1:8081/kubernetes/v1.36/deb/Release.key",
        "http://192.0.2.1:8081/kubernetes/v1.36/deb/InRelease",
        "http://192.0.2.1:8081/cri-o/v1.36/deb/Release.key",
        "http://192.0.2.1:8081/cri-o/v1.36/deb/InRelease",
        "http://192.0.2.1:8081/calico/v3.32.1/v1_crd_projectcalico_org.yaml",
        "http://192.0.2.1:8081/calico/v3.32.1/tigera-operator.yaml",
        "http://192.0.2.1:8081/calico/v3.32.1/SHA256SUMS",
    ]
    other_args = next(ln for ln in runs(other)[0].splitlines() if ln.startswith("set -- "))
    assert len(shlex.split(other_args)) - 2 == 4  # no Calico on a worker
    # nothing left to fetch: no check
    ca_pem, _ = cluster_ca()
    cp = running_cp(cfg, "krusty", ca_pem, crd=True, operator_image=OPERATOR, installation=True,
                    calico_available=True)
    cp = with_files(cp, *(fstate(f"{CALICO_DIR}/{m}", b"", 0o644) for m in CALICO_MANIFESTS))
    p = plan_of(cfg, {"krusty": cp, "bart": joined(cfg, "bart")})
    assert not [c for c in p.changes if c.resource == "artifacts"]


@pytest.fixture()
def loopback_mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving tmp_path (the only network these tests use)."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/", root
    finally:
        srv.shutdown()


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], capture_output=True,
                          text=True, timeout=60)


def test_artifact_check_message_names_what_is_missing(loopback_mirror: tuple[str, Path]) -> None:
    base, root = loopback_mirror
    (root / "present.key").write_text("k")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    urls = [f"{base}kubernetes/v1.36/deb/Release.key", f"{base}present.key",
            f"http://127.0.0.1:{closed}/cri-o/v1.36/deb/Release.key", f"{base}calico/SHA256SUMS"]
    res = bash(k8s.artifact_check_command(urls, mirror=base))
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[0] == (f"cannot fetch {base}kubernetes/v1.36/deb/Release.key (and 2 more): "
                        "HTTP 404, not on the mirror")
    refused = (f"  http://127.0.0.1:{closed}/cri-o/v1.36/deb/Release.key: "
               "no route / connection refused")
    assert refused in lines
    assert f"  {base}calico/SHA256SUMS: HTTP 404, not on the mirror" in lines
    assert "present.key" not in res.stderr
    ok = bash(k8s.artifact_check_command([f"{base}present.key"], mirror=base))
    assert ok.returncode == 0 and ok.stderr == ""


def test_calico_download_checks_the_mirror_sha256sums(
    loopback_mirror: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = loopback_mirror
    cfg = load_text(GOOD.replace("artifacts: {mirror: null}", f"artifacts: {{mirror: '{base}'}}"))
    d = root / "calico" / "v3.32.1"
    d.mkdir(parents=True)
    sums = []
    for m in CALICO_MANIFESTS:
        (d / m).write_text(f"# {m}\n")
        sums.append(f"{hashlib.sha256((d / m).read_bytes()).hexdigest()}  {m}")
    (d / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    target = tmp_path / "calico-on-host"
    script = k8s._download_calico(cfg).command.replace(CALICO_DIR, str(target))
    res = bash(script)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(CALICO_MANIFESTS)
    (d / CALICO_MANIFESTS[1]).write_text("tampered\n")
    res = bash(script.replace(str(target), str(tmp_path / "again")))
    assert res.returncode == 1
    want = f"tigera-operator.yaml is not in {base}calico/v3.32.1/SHA256SUMS or does not match it"
    assert want in res.stderr
    assert not (tmp_path / "again" / CALICO_MANIFESTS[0]).exists()  # nothing half-installed


# ---------------------------------------------------------------------------------------------
# Calico and the UI


def test_fresh_cluster_gets_calico_in_order() -> None:
    p = plan_of(CFG, fresh_pair())
    res = [c.resource for c in changes(p, "calico")]
    assert res == ["calico manifests", "calico CRDs", "tigera operator", "calico installation",
                   "calico ready"]
    assert {c.host for c in changes(p, "calico")} == {"krusty"}
    crds = by_resource(changes(p, "calico"), "calico CRDs")[0]
    assert runs(crds)[0] == (
        "kubectl --kubeconfig=/etc/kubernetes/admin.conf apply --server-side "
        f"--field-manager=homekube --force-conflicts -f {CALICO_DIR}/v1_crd_projectcalico_org.yaml "
        ">/dev/null")
    inst = by_resource(changes(p, "calico"), "calico installation")[0]
    path = f"{CLUSTER_DIR}/calico-installation.yaml"
    kinds = [d["kind"] for d in yaml_docs(writes(inst)[path].content)]
    assert kinds == ["Installation", "APIServer"]
    ready = by_resource(changes(p, "calico"), "calico ready")[0]
    assert "tigerastatus calico" in runs(ready)[0] and "Not ready:" in runs(ready)[0]


def test_running_calico_is_nochange_and_ipip_falls_back_to_vxlan() -> None:
    cfg = load_text(GOOD.replace("network:\n", "network:\n  encapsulation: IPIP\n"))
    ca_pem, _ = cluster_ca()
    kube = {"crd": True, "operator_image": OPERATOR, "installation": True, "calico_available": True,
            "headlamp": True, "bindings": frozenset({"headlamp-view"}), "ipip": False}
    cp = running_cp(cfg, "krusty", ca_pem, **kube)
    cp = with_files(cp, *(fstate(f"{CALICO_DIR}/{m}", b"", 0o644) for m in CALICO_MANIFESTS),
                    *(fstate(path, content)
                      for path, content in cluster_files(cfg, kernel_has_ipip=False)))
    p = plan_of(cfg, {"krusty": cp, "bart": joined(cfg, "bart")})
    assert p.changes == []
    files = dict(cluster_files(cfg, kernel_has_ipip=False))
    installation = files[f"{CLUSTER_DIR}/calico-installation.yaml"]
    assert b"encapsulation: VXLAN\n" in installation and b"IPIP" not in installation


def test_ui_access_change_replaces_the_binding_and_none_removes_headlamp() -> None:
    ca_pem, _ = cluster_ca()
    cp = running_cp(CFG, "krusty", ca_pem, headlamp=True, bindings=frozenset({"headlamp-view"}),
                    crd=True, operator_image=OPERATOR, installation=True, calico_available=True)
    admin = load_text(GOOD.replace("access: read-only", "access: admin"))
    (ui,) = changes(plan_of(admin, {"krusty": cp, "bart": joined(admin, "bart")}), "ui")
    cmds = runs(ui)
    assert any("delete clusterrolebinding headlamp-view --ignore-not-found" in c for c in cmds)
    assert any("rollout status deployment/headlamp --timeout=300s" in c for c in cmds)
    assert b"name: cluster-admin" in writes(ui)[f"{CLUSTER_DIR}/headlamp.yaml"].content
    assert not any("Secret" in a.describe() for a in ui.actions)
    none = load_text(GOOD.replace("ui: {kind: headlamp, access: read-only}", "ui: {kind: none}"))
    (rm,) = changes(plan_of(none, {"krusty": cp, "bart": joined(none, "bart")}), "ui")
    assert "delete namespace headlamp" in runs(rm)[0]


def test_headlamp_objects_have_no_token_secret() -> None:
    docs = yaml_docs(dict(cluster_files(CFG))[f"{CLUSTER_DIR}/headlamp.yaml"])
    assert "Secret" not in {d["kind"] for d in docs}
    (crb,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert crb["roleRef"]["name"] == "view"


# ---------------------------------------------------------------------------------------------
# facts


def test_kube_fact_parser() -> None:
    text = ("kubeadm=v1.36.4\nipip=no\nheld=cri-o kubeadm kubectl kubelet \nreadyz=ok\n"
            "nodes=h1 h2 \n"
            "crd=customresourcedefinition.apiextensions.k8s.io/installations.operator.tigera.io\n"
            "operator=quay.io/tigera/operator:v1.42.3\ninstallation=\ntigerastatus=False\n"
            "headlamp=\nbindings=headlamp-view \n")
    kf = parse_kube_fact(text)
    assert kf.kubeadm == "v1.36.4" and not kf.ipip and kf.api_ok
    assert kf.held == {"cri-o", "kubeadm", "kubectl", "kubelet"} and kf.nodes == {"h1", "h2"}
    assert kf.crd and kf.operator and not kf.installation and kf.calico_available is False
    assert kf.operator_image == "quay.io/tigera/operator:v1.42.3" and kf.flannel is None
    assert kf.bindings == {"headlamp-view"} and not kf.headlamp
    empty = parse_kube_fact("ipip=yes\n")
    assert empty.readyz is None and empty.calico_available is None and not empty.api_ok


def test_kube_fact_runs_on_a_host_without_kubernetes() -> None:
    for cfg in (CFG, CONTAINERD):
        res = subprocess.run(["bash", "-c", k8s.kube_fact(cfg).command], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        kf = parse_kube_fact(res.stdout)
        assert kf.readyz is None and kf.kubeadm is None
        assert kf.containerd is None and kf.runc is None


# ---------------------------------------------------------------------------------------------
# kube.py against a fake API


KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "admin@x",
    "clusters": [{"name": "x", "cluster": {"server": "https://192.0.2.54:6443",
                                           "certificate-authority-data": "Q0E="}}],
    "users": [{"name": "admin", "user": {"client-certificate-data": "Q0VSVA==",
                                         "client-key-data": "S0VZ"}}],
    "contexts": [{"name": "admin@x", "context": {"cluster": "x", "user": "admin"}}],
}


def fake_api(handler: Any) -> Kube:
    kc = {**KUBECONFIG, "clusters": [{"name": "x", "cluster": {"server": "https://192.0.2.54:6443"}}],
          "users": [{"name": "admin", "user": {"token": "t"}}]}
    return Kube(api_client(kc, transport=httpx2.MockTransport(handler)), interval=0.01)


def test_apply_is_server_side_with_field_manager_homekube() -> None:
    from homekube.render.kubernetes import all_cluster_objects

    seen: list[httpx2.Request] = []

    def handler(req: httpx2.Request) -> httpx2.Response:
        seen.append(req)
        return httpx2.Response(200, content=req.content)

    async def go() -> list[str]:
        k = fake_api(handler)
        try:
            return await k.apply(all_cluster_objects(CFG))
        finally:
            await k.client.close()

    done = asyncio.run(go())
    assert done[:2] == ["Installation/default", "APIServer/default"]
    assert all(r.method == "PATCH" for r in seen)
    assert all(r.headers["content-type"] == "application/apply-patch+yaml" for r in seen)
    assert all(r.url.params["fieldManager"] == "homekube" and r.url.params["force"] == "true"
               for r in seen)
    assert seen[0].url.path == "/apis/operator.tigera.io/v1/installations/default"


MIN_AVAIL = "Deployment does not have minimum availability."


def test_wait_says_what_is_not_ready() -> None:
    dep: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "headlamp", "namespace": "headlamp", "generation": 2},
           "spec": {"replicas": 1, "selector": {}, "template": {}},
           "status": {"observedGeneration": 2, "availableReplicas": 0, "updatedReplicas": 1,
                      "conditions": [{"type": "Available", "status": "False",
                                      "reason": "MinimumReplicasUnavailable",
                                      "message": MIN_AVAIL}]}}

    async def go() -> str:
        k = fake_api(lambda req: httpx2.Response(200, json=dep))
        try:
            await k.wait_deployment("headlamp", "headlamp", seconds=0.05)
        except HomekubeError as e:
            return str(e)
        finally:
            await k.client.close()
        return "ready?"

    msg = asyncio.run(go())
    assert msg.startswith(
        "deployment headlamp/headlamp is not ready after 0s: 0/1 replicas available")
    assert "Available=False (MinimumReplicasUnavailable: Deployment does not have" in msg
    ready = {**dep, "status": {**dep["status"], "availableReplicas": 1}}
    assert deployment_progress(ready) == (True, "1/1 replicas available")
    stale = {**dep, "status": {**dep["status"], "observedGeneration": 1}}
    assert deployment_progress(stale)[1] == "the controller has not seen the latest spec yet"


def test_token_request_and_missing_object() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx2.Request) -> httpx2.Response:
        if req.url.path == "/api/v1/namespaces/headlamp/serviceaccounts/headlamp/token":
            body = json.loads(req.content)
            bodies.append(body)
            return httpx2.Response(201, json={**body, "status": {
                "token": "eyJ.fake", "expirationTimestamp": "2026-11-25T01:00:00Z"}})
        return httpx2.Response(404, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "message": 'services "headlamp" not found',
                                          "reason": "NotFound", "code": 404})

    async def go() -> tuple[str, str]:
        k = fake_api(handler)
        try:
            token = await k.token("headlamp", "headlamp", 3600)
            try:
                await k.cluster_ip("headlamp", "headlamp")
            except HomekubeError as e:
                return token, str(e)
            return token, ""
        finally:
            await k.client.close()

    token, err = asyncio.run(go())
    assert token == "eyJ.fake"
    assert bodies[0]["kind"] == "TokenRequest" and bodies[0]["spec"]["expirationSeconds"] == 3600
    assert 'refused: services "headlamp" not found (NotFound, 404)' in err


# ---------------------------------------------------------------------------------------------
# kubeconfig and render


def test_operator_kubeconfig_points_at_a_reachable_server() -> None:
    text = json.dumps(KUBECONFIG)  # JSON is YAML
    out = operator_kubeconfig(text, CFG, server="https://k8s.home.arpa:6443")
    (doc,) = yaml_docs(out.encode())
    assert doc["current-context"] == "krusty"
    assert doc["clusters"] == [{"name": "krusty", "cluster": {
        "server": "https://k8s.home.arpa:6443", "certificate-authority-data": "Q0E="}}]
    assert doc["users"][0] == {"name": "krusty-admin", "user": {
        "client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}}
    with pytest.raises(HomekubeError, match="client-key-data"):
        bad = {**KUBECONFIG, "users": [{"name": "admin", "user": {"client-certificate-data": "x"}}]}
        operator_kubeconfig(json.dumps(bad), CFG, server="https://x:6443")


def test_render_writes_kubernetes_files_with_placeholders(tmp_path: Path) -> None:
    from homekube.ops.render_out import render_all

    n = render_all(CFG, tmp_path)
    assert n > 0
    init = (tmp_path / "krusty" / INIT_CONFIG.lstrip("/")).read_text()
    assert REDACTED_TOKEN in init and "kind: ClusterConfiguration" in init
    join = (tmp_path / "bart" / JOIN_CONFIG.lstrip("/")).read_text()
    assert "sha256:" + "0" * 64 in join
    assert (tmp_path / "bart" / CRIO_DROPIN_PATH.lstrip("/")).is_file()
    assert (tmp_path / "cluster" / "calico-installation.yaml").is_file()
    assert (tmp_path / "cluster" / "headlamp.yaml").is_file()
    urls = (tmp_path / "cluster" / "calico-manifests.txt").read_text()
    assert urls.index("v1_crd_projectcalico_org.yaml") < urls.index("tigera-operator.yaml")
    off = OFF
    assert write_cluster_objects(off, tmp_path / "off") == 0


def test_installed_kubeadm_of_another_minor_never_inits() -> None:
    f = installed(CFG, host(CFG, "krusty"), kubeadm="v1.35.2")
    p = plan_of(CFG, {"krusty": f, "bart": host(CFG, "bart")})
    assert changes(p, "kubeadm") == []
    (w,) = [s for s in steps(p, "kubeadm") if isinstance(s, NoChange) and s.warning]
    assert "kubeadm v1.35.2 is installed but cluster.yaml wants 1.36" in w.reason


def test_calico_wait_runs_in_bash_until_available_or_its_deadline(tmp_path: Path) -> None:
    """The wait's script against a stand-in kubectl: done once Available, else it names why."""
    fake = tmp_path / "kubectl"
    fake.write_text('#!/bin/sh\ncase "$*" in *jsonpath*Available*) cat "$STATE";; '
                    '*) echo "calico  False  True  Degraded";; esac\n')
    fake.chmod(0o755)
    state = tmp_path / "state"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "STATE": str(state)}
    state.write_text("True")
    run = k8s._wait_calico(seconds=2).command
    ok = subprocess.run(["bash", "-c", run], capture_output=True, text=True, timeout=30, env=env)
    assert ok.returncode == 0 and ok.stderr == ""
    state.write_text("False")
    slow = k8s._wait_calico(seconds=1)
    bad = subprocess.run(["bash", "-c", slow.command.replace("sleep 5", "sleep 0.2")],
                         capture_output=True, text=True, timeout=30, env=env)
    assert bad.returncode == 1
    assert bad.stderr.startswith("Calico is not Available after 1s. Not ready:\n")
    assert "calico  False  True  Degraded" in bad.stderr
