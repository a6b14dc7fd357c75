"""Golden files for every renderer, for four clusters, plus the properties they must show.

Regenerate after an intended change with ``HOMEKUBE_UPDATE_GOLDEN=1 python -m pytest
tests/render/test_golden.py`` and review the diff like code. Host addresses are documentation
ranges only (192.0.2.0/24, 2001:db8::/32); the IPv4 pod/service ranges are homekube's private
defaults (10.42.0.0/16, 10.96.0.0/16).
"""

from __future__ import annotations

import configparser
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML
from tests.conftest import TEST_CA_PEM

from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.render import kubernetes as k8s
from homekube.render import runtime
from homekube.render.flannel import flannel_objects
from homekube.render.yamlout import dump_all

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("HOMEKUBE_UPDATE_GOLDEN") == "1"

# Stand-in hashes for the mirror case: a mirror needs pinned files, and no real file can be
# downloaded where these tests run. They are obviously not real digests.
FAKE_MIRROR_HASHES = {
    "v1_crd_projectcalico_org.yaml": "1" * 64,
    "tigera-operator.yaml": "2" * 64,
}

CASES: dict[str, str] = {
    # the 2020 post's machine, done right: one box, every role, IPv4 only, all defaults
    "single-ipv4": """\
name: home
hosts:
- name: node1
  address: 192.0.2.10
  roles: [control-plane, etcd, worker]
""",
    # the post's "future work": dual stack, a DNS endpoint for a later HA move, NodeSwap
    "single-dualstack": """\
name: home
kubernetes:
  version: "1.36.4"
  controlPlaneEndpoint: k8s.home.arpa:6443
  certSans: [node1.home.arpa]
network:
  pods: [10.42.0.0/16, 2001:db8:42::/56]
  services: [10.96.0.0/16, 2001:db8:96::/112]
hostPrep:
  swap: allowed
hosts:
- name: node1
  address: 192.0.2.10
  address6: 2001:db8:10::10
  roles: [control-plane, etcd, worker]
""",
    # one tainted control plane with its etcd, two workers, a local mirror, iptables proxy
    "cp1-workers2": """\
name: lab
kubernetes:
  version: "1.35"
  proxyMode: iptables
artifacts:
  mirror: https://mirror.example.net/homekube
ui:
  access: admin
hosts:
- name: cp1
  address: 192.0.2.11
  roles: [control-plane, etcd]
- name: w1
  address: 192.0.2.21
  roles: [worker]
- name: w2
  address: 192.0.2.22
  roles: [worker]
""",
    # HA: three untainted control planes, three dedicated etcd hosts, IPv6-primary dual
    # stack, IP-in-IP (the lab kernel lacks it: see calico-installation-no-ipip.yaml), RSA
    "cp3-etcd3": """\
name: ha
kubernetes:
  version: "1.37.1"
network:
  pods: [2001:db8:42::/56, 10.42.0.0/16]
  services: [2001:db8:96::/112, 10.96.0.0/16]
  encapsulation: IPIPCrossSubnet
etcd:
  keyType: rsa-2048
hosts:
- {name: cp1, address: 192.0.2.31, address6: "2001:db8:10::31", roles: [control-plane, worker]}
- {name: cp2, address: 192.0.2.32, address6: "2001:db8:10::32", roles: [control-plane, worker]}
- {name: cp3, address: 192.0.2.33, address6: "2001:db8:10::33", roles: [control-plane, worker]}
- {name: etcd1, address: 192.0.2.41, address6: "2001:db8:10::41", roles: [etcd]}
- {name: etcd2, address: 192.0.2.42, address6: "2001:db8:10::42", roles: [etcd]}
- {name: etcd3, address: 192.0.2.43, address6: "2001:db8:10::43", roles: [etcd]}
""",
    # what the real lab needs, as a user would write it: containerd from the mirror, flannel,
    # dual stack, images from a plain-HTTP registry, a cgroup v1 host with the cgroupfs driver,
    # no negative OOM scores, an overlayfs root (native snapshotter), a read-only
    # nf_conntrack_max, kubelet and kube-proxy settings
    "lab-containerd-flannel": """\
name: lab
kubernetes:
  version: "1.36.3"
  runtime: containerd
  cgroupDriver: cgroupfs
  allowCgroupV1: true
  containerd: {restrictOomScoreAdj: true, oomScoreAdjust: 0, snapshotter: native}
  kubeProxy: {conntrackMaxPerCore: 0}
  kubelet:
    imageGCHighThresholdPercent: 100
    evictionHard: {nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
network:
  cni: flannel
  pods: [10.42.0.0/16, 2001:db8:42::/56]
  services: [10.96.0.0/16, 2001:db8:96::/112]
artifacts:
  mirror: http://192.0.2.1:3142/homekube
  imageRepository: 192.0.2.1:5000
  registries:
  - {host: "192.0.2.1:5000", plainHttp: true}
hosts:
- {name: h1, address: 192.0.2.11, address6: "2001:db8:10::11", roles: [control-plane, etcd, worker]}
- {name: h2, address: 192.0.2.12, address6: "2001:db8:10::12", roles: [etcd, worker]}
- {name: h3, address: 192.0.2.13, address6: "2001:db8:10::13", roles: [etcd, worker]}
""",
    # an air-gapped home: cri-o and Calico from a private registry with its own CA (and a
    # second registry reached without verification), reserved resources, more pods per node
    "private-registry-crio": """\
name: home
kubernetes:
  kubelet:
    maxPods: 150
    systemReserved: {cpu: 200m, memory: 256Mi}
    kubeReserved: {cpu: 100m, memory: 128Mi}
artifacts:
  imageRepository: registry.home.arpa/mirror
  registries:
  - host: registry.home.arpa
    ca: |
""" + "".join(f"      {line}\n" for line in TEST_CA_PEM.splitlines()) + """\
  - {host: "192.0.2.250:5000", skipVerify: true}
hosts:
- name: node1
  address: 192.0.2.10
  roles: [control-plane, etcd, worker]
""",
}


def config(case: str) -> ClusterConfig:
    return load_text(CASES[case], f"{case}.yaml")


def _repo_text(files: list[k8s.RepoFile]) -> str:
    parts = []
    for f in files:
        parts.append(
            f"### path: {f.path} (mode {f.mode:o})\n"
            f"### key_url: {f.key_url}\n"
            f"### keyring: {f.keyring}\n"
            f"{f.content}"
        )
    return "\n".join(parts)


def _artifacts_text(artifacts: list[k8s.Artifact]) -> str:
    return "".join(f"{a.filename} {a.url} sha256={a.sha256}\n" for a in artifacts)


def render_case(case: str) -> dict[str, str]:
    """Every rendered file of one cluster, by golden file name."""
    cfg = config(case)
    out: dict[str, str] = {}
    cps = cfg.control_planes
    init_host = cps[0].name
    out[f"kubeadm-init-{init_host}.yaml"] = k8s.kubeadm_init_config(cfg, init_host)
    for h in cfg.hosts:
        if h.name == init_host or not (h.has("control-plane") or h.has("worker")):
            continue
        out[f"kubeadm-join-{h.name}.yaml"] = k8s.kubeadm_join_config(
            cfg,
            h.name,
            control_plane=h.has("control-plane"),
            token=k8s.REDACTED_TOKEN,
            ca_cert_hashes=[k8s.REDACTED_CA_CERT_HASH],
        )
    if cfg.kubernetes.runtime == "cri-o":
        out["crio-10-homekube.conf"] = k8s.crio_dropin(cfg)
    else:
        pause = k8s.PAUSE_VERSIONS[cfg.kubernetes.minor]
        out["containerd-config.toml"] = runtime.containerd_config(cfg, pause)
        out["containerd.service"] = runtime.containerd_unit(cfg)
    for path, content in runtime.registry_files(cfg):
        out["registry" + path.replace("/", "_").replace(":", "_")] = content
    out["repos-debian.txt"] = _repo_text(k8s.repo_files(cfg, "debian"))
    out["repos-rhel.txt"] = _repo_text(k8s.repo_files(cfg, "rhel"))
    if cfg.network.cni == "calico":
        out["calico-installation.yaml"] = dump_all(k8s.calico_installation(cfg))
        if cfg.network.encapsulation.startswith("IPIP"):
            out["calico-installation-no-ipip.yaml"] = dump_all(
                k8s.calico_installation(cfg, kernel_has_ipip=False)
            )
        hashes = FAKE_MIRROR_HASHES if cfg.artifacts.mirror else None
        out["calico-manifests.txt"] = _artifacts_text(k8s.calico_manifest_urls(cfg, sha256=hashes))
    else:
        out["flannel.yaml"] = dump_all(flannel_objects(cfg))
    out["headlamp.yaml"] = dump_all(k8s.headlamp_objects(cfg))
    return out


RENDERED = {case: render_case(case) for case in CASES}
GOLDEN_PARAMS = [(case, name) for case, files in RENDERED.items() for name in sorted(files)]


@pytest.mark.parametrize(
    ("case", "name"), GOLDEN_PARAMS, ids=[f"{c}/{n}" for c, n in GOLDEN_PARAMS]
)
def test_golden(case: str, name: str) -> None:
    path = GOLDEN / case / name
    text = RENDERED[case][name]
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with HOMEKUBE_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", list(CASES))
def test_no_stale_golden_files(case: str) -> None:
    on_disk = {p.name for p in (GOLDEN / case).glob("*")} if (GOLDEN / case).exists() else set()
    if UPDATE:
        for name in on_disk - set(RENDERED[case]):
            (GOLDEN / case / name).unlink()
        on_disk = {p.name for p in (GOLDEN / case).glob("*")}
    assert on_disk == set(RENDERED[case])


def test_rendering_is_deterministic() -> None:
    assert {case: render_case(case) for case in CASES} == RENDERED


# --------------------------------------------------------------------------------------------
# properties the golden files must show (so a careless regeneration cannot hide a regression)
# --------------------------------------------------------------------------------------------


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe", pure=True).load_all(text) if d is not None]


def _by_kind(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in _docs(text)}


def test_single_ipv4_init() -> None:
    docs = _by_kind(RENDERED["single-ipv4"]["kubeadm-init-node1.yaml"])
    assert list(docs) == [
        "InitConfiguration", "ClusterConfiguration", "KubeletConfiguration",
        "KubeProxyConfiguration",
    ]  # fmt: skip
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["nodeRegistration"]["taints"] == []  # control plane + worker
    assert init["nodeRegistration"]["criSocket"] == "unix:///var/run/crio/crio.sock"
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "192.0.2.10"}
    ]
    assert init["localAPIEndpoint"] == {"advertiseAddress": "192.0.2.10", "bindPort": 6443}
    assert cluster["controlPlaneEndpoint"] == "192.0.2.10:6443"
    assert cluster["kubernetesVersion"] == "stable-1.36"
    assert cluster["encryptionAlgorithm"] == "ECDSA-P256"
    assert cluster["etcd"] == {
        "external": {
            "endpoints": ["https://192.0.2.10:2379"],
            "caFile": "/etc/kubernetes/pki/etcd/ca.crt",
            "certFile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
            "keyFile": "/etc/kubernetes/pki/apiserver-etcd-client.key",
        }
    }
    assert docs["KubeProxyConfiguration"]["mode"] == "nftables"
    assert "failSwapOn" not in docs["KubeletConfiguration"]


def test_dual_stack_init() -> None:
    docs = _by_kind(RENDERED["single-dualstack"]["kubeadm-init-node1.yaml"])
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "192.0.2.10,2001:db8:10::10"}
    ]
    assert cluster["networking"] == {
        "serviceSubnet": "10.96.0.0/16,2001:db8:96::/112",
        "podSubnet": "10.42.0.0/16,2001:db8:42::/56",
    }
    assert cluster["kubernetesVersion"] == "v1.36.4"
    assert cluster["controlPlaneEndpoint"] == "k8s.home.arpa:6443"
    assert cluster["apiServer"]["certSANs"] == [
        "k8s.home.arpa", "192.0.2.10", "2001:db8:10::10", "node1.home.arpa",
    ]  # fmt: skip
    kubelet = docs["KubeletConfiguration"]
    assert kubelet["failSwapOn"] is False
    assert kubelet["memorySwap"] == {"swapBehavior": "LimitedSwap"}


def test_tainted_control_plane_and_worker_joins() -> None:
    files = RENDERED["cp1-workers2"]
    init = _by_kind(files["kubeadm-init-cp1.yaml"])["InitConfiguration"]
    assert "taints" not in init["nodeRegistration"]  # nil: kubeadm adds the control-plane taint
    join = _docs(files["kubeadm-join-w1.yaml"])
    assert [d["kind"] for d in join] == ["JoinConfiguration"]
    assert "controlPlane" not in join[0]
    assert "taints" not in join[0]["nodeRegistration"]
    assert join[0]["discovery"]["bootstrapToken"] == {
        "token": k8s.REDACTED_TOKEN,
        "apiServerEndpoint": "192.0.2.11:6443",
        "caCertHashes": [k8s.REDACTED_CA_CERT_HASH],
    }
    assert "kubeadm-join-cp1.yaml" not in files


def test_ha_ipv6_primary_brackets_and_control_plane_joins() -> None:
    files = RENDERED["cp3-etcd3"]
    cluster = _by_kind(files["kubeadm-init-cp1.yaml"])["ClusterConfiguration"]
    assert cluster["controlPlaneEndpoint"] == "[2001:db8:10::31]:6443"
    assert cluster["etcd"]["external"]["endpoints"] == [
        "https://[2001:db8:10::41]:2379",
        "https://[2001:db8:10::42]:2379",
        "https://[2001:db8:10::43]:2379",
    ]
    assert cluster["encryptionAlgorithm"] == "RSA-2048"
    assert cluster["networking"]["serviceSubnet"].startswith("2001:db8:96::/112,")
    assert cluster["apiServer"]["certSANs"][0] == "2001:db8:10::31"  # endpoint host, unbracketed
    join = _docs(files["kubeadm-join-cp2.yaml"])[0]
    assert join["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "2001:db8:10::32", "bindPort": 6443}
    }
    assert join["nodeRegistration"]["taints"] == []
    assert join["nodeRegistration"]["kubeletExtraArgs"][0]["value"] == (
        "2001:db8:10::32,192.0.2.32"
    )
    assert not any(name.startswith("kubeadm-join-etcd") for name in files)


def test_calico_pools_and_ipip_fallback() -> None:
    inst = _docs(RENDERED["cp3-etcd3"]["calico-installation.yaml"])[0]
    pools = inst["spec"]["calicoNetwork"]["ipPools"]
    assert [(p["cidr"], p["blockSize"], p["encapsulation"]) for p in pools] == [
        ("2001:db8:42::/56", 122, "VXLAN"),
        ("10.42.0.0/16", 26, "IPIPCrossSubnet"),
    ]
    assert "bgp" not in inst["spec"]["calicoNetwork"]  # IP-in-IP routes need BGP
    lab = _docs(RENDERED["cp3-etcd3"]["calico-installation-no-ipip.yaml"])[0]
    assert lab["spec"]["calicoNetwork"]["ipPools"][1]["encapsulation"] == "VXLANCrossSubnet"
    assert lab["spec"]["calicoNetwork"]["bgp"] == "Disabled"
    single = _docs(RENDERED["single-ipv4"]["calico-installation.yaml"])
    net = single[0]["spec"]["calicoNetwork"]
    assert net["nodeAddressAutodetectionV4"] == {"kubernetes": "NodeInternalIP"}
    assert "nodeAddressAutodetectionV6" not in net
    assert all(p["natOutgoing"] == "Enabled" and p["nodeSelector"] == "all()" for p in pools)
    assert single[1] == {
        "apiVersion": "operator.tigera.io/v1",
        "kind": "APIServer",
        "metadata": {"name": "default"},
        "spec": {},
    }


@pytest.mark.parametrize(
    ("configured", "has_ipip", "expected"),
    [
        ("IPIP", False, "VXLAN"),
        ("IPIPCrossSubnet", False, "VXLANCrossSubnet"),
        ("IPIP", True, "IPIP"),
        ("VXLANCrossSubnet", False, "VXLANCrossSubnet"),
        ("None", False, "None"),
    ],
)
def test_ipv4_encapsulation(configured: str, has_ipip: bool, expected: str) -> None:
    cfg = load_text(CASES["single-ipv4"] + f"network:\n  encapsulation: {configured}\n")
    assert k8s.ipv4_encapsulation(cfg, has_ipip) == expected


def test_ipv6_only_disables_v4_autodetection() -> None:
    cfg = load_text(
        """\
name: v6
network: {pods: ["2001:db8:42::/56"], services: ["2001:db8:96::/112"], encapsulation: None}
hosts:
- {name: node1, address: "2001:db8:10::10", roles: [control-plane, etcd, worker]}
"""
    )
    inst = k8s.calico_installation(cfg)[0]
    net = inst["spec"]["calicoNetwork"]
    assert net["nodeAddressAutodetectionV4"] == {}
    assert net["nodeAddressAutodetectionV6"] == {"kubernetes": "NodeInternalIP"}
    assert net["ipPools"][0]["encapsulation"] == "None"
    assert "bgp" not in net
    assert k8s.control_plane_endpoint(cfg) == "[2001:db8:10::10]:6443"


def test_mirror_replaces_every_upstream_url() -> None:
    files = RENDERED["cp1-workers2"]
    for name in ("repos-debian.txt", "repos-rhel.txt", "calico-manifests.txt"):
        assert "https://mirror.example.net/homekube/" in files[name]
        for upstream in ("pkgs.k8s.io", "download.opensuse.org", "githubusercontent"):
            assert upstream not in files[name], (name, upstream)
    cfg = config("cp1-workers2")
    with pytest.raises(ValueError, match="SHA-256"):
        k8s.calico_manifest_urls(cfg)


def test_upstream_urls() -> None:
    cfg = config("single-ipv4")
    arts = k8s.calico_manifest_urls(cfg)
    assert [a.filename for a in arts] == ["v1_crd_projectcalico_org.yaml", "tigera-operator.yaml"]
    assert arts[0].url == (
        "https://raw.githubusercontent.com/projectcalico/calico/v3.32.1/manifests/"
        "v1_crd_projectcalico_org.yaml"
    )
    assert all(a.sha256 is None for a in arts)
    deb = k8s.repo_files(cfg, "debian")
    assert [f.path for f in deb] == [
        "/etc/apt/sources.list.d/kubernetes.list",
        "/etc/apt/sources.list.d/cri-o.list",
    ]
    assert deb[0].content.endswith(
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
        "https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /\n"
    )
    assert deb[1].key_url == (
        "https://download.opensuse.org/repositories/isv:/cri-o:/stable:/v1.36/deb/Release.key"
    )
    rpm = k8s.repo_files(cfg, "rhel")
    assert "exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni\n" in rpm[0].content
    assert "exclude=" not in rpm[1].content


def test_crio_dropin_is_toml() -> None:
    cases = [c for c in RENDERED if config(c).kubernetes.runtime == "cri-o"]
    assert len(cases) >= 4
    for case in cases:
        data = tomllib.loads(RENDERED[case]["crio-10-homekube.conf"])
        cfg = config(case)
        repo = cfg.artifacts.image_repository or "registry.k8s.io"
        assert data == {
            "crio": {
                "runtime": {"cgroup_manager": "systemd"},
                "image": {"pause_image": f"{repo}/pause:{k8s.PAUSE_VERSIONS[cfg.kubernetes.minor]}"},
            }
        }


def test_crio_cgroupfs_needs_conmon_in_the_pod() -> None:
    cfg = load_text(CASES["single-ipv4"] + "kubernetes: {cgroupDriver: cgroupfs}\n")
    data = tomllib.loads(k8s.crio_dropin(cfg))
    assert data["crio"]["runtime"] == {"cgroup_manager": "cgroupfs", "conmon_cgroup": "pod"}
    kubelet = _by_kind(k8s.kubeadm_init_config(cfg, "node1"))["KubeletConfiguration"]
    assert kubelet["cgroupDriver"] == "cgroupfs"


def test_lab_containerd_config_reads_back() -> None:
    files = RENDERED["lab-containerd-flannel"]
    conf = tomllib.loads(files["containerd-config.toml"])
    assert conf["version"] == 3
    images = conf["plugins"]["io.containerd.cri.v1.images"]
    assert (images["snapshotter"], images["use_local_image_pull"]) == ("native", True)
    assert images["pinned_images"] == {"sandbox": "192.0.2.1:5000/pause:3.10.2"}
    assert images["registry"] == {"config_path": "/etc/containerd/certs.d"}
    rt = conf["plugins"]["io.containerd.cri.v1.runtime"]
    assert rt["restrict_oom_score_adj"] is True
    runc = rt["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"BinaryName": "/usr/local/sbin/runc", "SystemdCgroup": False}
    assert rt["cni"] == {"bin_dirs": ["/opt/cni/bin"], "conf_dir": "/etc/cni/net.d"}
    hosts = tomllib.loads(files["registry_etc_containerd_certs.d_192.0.2.1_5000_hosts.toml"])
    assert hosts == {"server": "http://192.0.2.1:5000",
                     "host": {"http://192.0.2.1:5000": {"capabilities": ["pull", "resolve"]}}}


def test_containerd_defaults_follow_systemd_and_upstream_unit() -> None:
    cfg = load_text(CASES["single-ipv4"] + "kubernetes: {runtime: containerd}\n")
    conf = tomllib.loads(runtime.containerd_config(cfg, "3.10.2"))
    rt = conf["plugins"]["io.containerd.cri.v1.runtime"]
    assert rt["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert rt["restrict_oom_score_adj"] is False
    images = conf["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"] == {"sandbox": "registry.k8s.io/pause:3.10.2"}
    assert images["snapshotter"] == "overlayfs" and "use_local_image_pull" not in images
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(runtime.containerd_unit(cfg))
    svc = unit["Service"]
    assert svc["ExecStart"] == "/usr/local/bin/containerd"
    assert (svc["Type"], svc["Delegate"], svc["KillMode"]) == ("notify", "yes", "process")
    assert svc["OOMScoreAdjust"] == "-999"
    lab = configparser.ConfigParser(interpolation=None)
    lab.optionxform = str  # type: ignore[assignment,method-assign]
    lab.read_string(RENDERED["lab-containerd-flannel"]["containerd.service"])
    assert lab["Service"]["OOMScoreAdjust"] == "0"
    assert runtime.registry_files(cfg) == []
    init = _by_kind(k8s.kubeadm_init_config(cfg, "node1"))
    assert init["InitConfiguration"]["nodeRegistration"]["criSocket"] == runtime.CONTAINERD_SOCKET
    assert init["KubeletConfiguration"]["containerRuntimeEndpoint"] == runtime.CONTAINERD_SOCKET
    assert [f.path for f in k8s.repo_files(cfg, "debian")] == [
        "/etc/apt/sources.list.d/kubernetes.list"]


def test_lab_kubeadm_configs_carry_the_opt_ins() -> None:
    files = RENDERED["lab-containerd-flannel"]
    docs = _by_kind(files["kubeadm-init-h1.yaml"])
    reg = docs["InitConfiguration"]["nodeRegistration"]
    assert reg["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert reg["ignorePreflightErrors"] == ["SystemVerification"]
    cluster = docs["ClusterConfiguration"]
    assert cluster["imageRepository"] == "192.0.2.1:5000"
    assert cluster["kubernetesVersion"] == "v1.36.3"
    kubelet = docs["KubeletConfiguration"]
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["imageGCHighThresholdPercent"] == 100
    assert kubelet["evictionHard"]["nodefs.available"] == "0%"
    assert docs["KubeProxyConfiguration"]["conntrack"] == {"maxPerCore": 0}
    for name in ("kubeadm-join-h2.yaml", "kubeadm-join-h3.yaml"):
        join = _docs(files[name])[0]
        assert join["nodeRegistration"]["ignorePreflightErrors"] == ["SystemVerification"]
        assert join["nodeRegistration"]["criSocket"] == "unix:///run/containerd/containerd.sock"
    # without the opt-ins nothing of this is written
    plain = _by_kind(RENDERED["single-ipv4"]["kubeadm-init-node1.yaml"])
    assert "ignorePreflightErrors" not in plain["InitConfiguration"]["nodeRegistration"]
    assert plain["KubeletConfiguration"]["failCgroupV1"] is True
    assert "conntrack" not in plain["KubeProxyConfiguration"]
    assert "imageRepository" not in plain["ClusterConfiguration"]


def test_flannel_objects_follow_the_networks_and_the_image_repository() -> None:
    objs = _docs(RENDERED["lab-containerd-flannel"]["flannel.yaml"])
    assert [o["kind"] for o in objs] == [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "DaemonSet",
    ]  # fmt: skip
    assert objs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    net = json.loads(objs[4]["data"]["net-conf.json"])
    assert net == {"Network": "10.42.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:42::/56",
                   "EnableNFTables": False, "Backend": {"Type": "vxlan"}}
    cni = json.loads(objs[4]["data"]["cni-conf.json"])
    assert [p["type"] for p in cni["plugins"]] == ["flannel", "portmap"]
    assert cni["plugins"][0]["delegate"] == {"hairpinMode": True, "isDefaultGateway": True}
    pod = objs[5]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert [c["name"] for c in pod["initContainers"]] == ["install-cni-plugin", "install-cni"]
    main = pod["containers"][0]
    assert main["command"] == ["/opt/bin/flanneld"]
    assert main["args"] == ["--ip-masq", "--kube-subnet-mgr"]
    assert main["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert images == {"192.0.2.1:5000/flannel-io/flannel:v0.28.10",
                      "192.0.2.1:5000/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"}
    mounts = {v["name"]: v for v in pod["volumes"]}
    assert mounts["xtables-lock"]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}


def test_flannel_ipv6_only_turns_ipv4_off() -> None:
    cfg = load_text("""\
name: v6
network: {cni: flannel, pods: ["2001:db8:42::/56"], services: ["2001:db8:96::/112"]}
hosts:
- {name: node1, address: "2001:db8:10::10", roles: [control-plane, etcd, worker]}
""")
    net = json.loads(flannel_objects(cfg)[4]["data"]["net-conf.json"])
    assert net["EnableIPv4"] is False and "Network" not in net
    assert (net["EnableIPv6"], net["IPv6Network"]) == (True, "2001:db8:42::/56")
    kinds = [o["kind"] for o in k8s.all_cluster_objects(cfg)]
    assert "Installation" not in kinds and kinds[-1] == "Service"  # flannel, then Headlamp


def test_private_registry_reaches_every_image_and_the_runtime() -> None:
    files = RENDERED["private-registry-crio"]
    assert files["registry_etc_containers_certs.d_registry.home.arpa_ca.crt"] == TEST_CA_PEM
    drop = tomllib.loads(files["registry_etc_containers_registries.conf.d_50-homekube.conf"])
    assert drop == {"registry": [{"location": "192.0.2.250:5000", "insecure": True}]}
    inst = _docs(files["calico-installation.yaml"])[0]
    assert inst["spec"]["registry"] == "registry.home.arpa/mirror/"
    headlamp = _docs(files["headlamp.yaml"])[3]["spec"]["template"]["spec"]["containers"][0]
    assert headlamp["image"] == "registry.home.arpa/mirror/headlamp-k8s/headlamp:v0.44.0"
    cluster = _by_kind(files["kubeadm-init-node1.yaml"])["ClusterConfiguration"]
    assert cluster["imageRepository"] == "registry.home.arpa/mirror"
    kubelet = _by_kind(files["kubeadm-init-node1.yaml"])["KubeletConfiguration"]
    assert kubelet["maxPods"] == 150
    assert kubelet["systemReserved"] == {"cpu": "200m", "memory": "256Mi"}
    # the same registries for containerd: hosts.toml with the CA beside it
    cfg = load_text(CASES["private-registry-crio"].replace("kubernetes:\n",
                                                          "kubernetes:\n  runtime: containerd\n"))
    got = dict(runtime.registry_files(cfg))
    d = "/etc/containerd/certs.d/registry.home.arpa"
    assert got[f"{d}/ca.crt"] == TEST_CA_PEM
    assert tomllib.loads(got[f"{d}/hosts.toml"])["host"] == {
        "https://registry.home.arpa": {"capabilities": ["pull", "resolve"], "ca": f"{d}/ca.crt"}}
    insecure = tomllib.loads(got["/etc/containerd/certs.d/192.0.2.250:5000/hosts.toml"])
    assert insecure["host"]["https://192.0.2.250:5000"]["skip_verify"] is True


def test_headlamp_access_levels() -> None:
    view = k8s.headlamp_objects(config("single-ipv4"))
    admin = k8s.headlamp_objects(config("cp1-workers2"))
    assert [o["kind"] for o in view] == [
        "Namespace", "ServiceAccount", "ClusterRoleBinding", "Deployment", "Service",
    ]  # fmt: skip
    assert view[2]["roleRef"]["name"] == "view"
    assert admin[2]["roleRef"]["name"] == "cluster-admin"
    assert view[2]["metadata"]["name"] != admin[2]["metadata"]["name"]  # roleRef is immutable
    assert not any(o["kind"] == "Secret" for o in view)
    pod = view[3]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == k8s.HEADLAMP_IMAGE
    assert container["ports"][0]["containerPort"] == 4466
    assert view[4]["spec"]["ports"][0]["port"] == 80
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_all_cluster_objects_order_and_switches() -> None:
    cfg = config("single-ipv4")
    kinds = [o["kind"] for o in k8s.all_cluster_objects(cfg)]
    assert kinds == [
        "Installation", "APIServer", "Namespace", "ServiceAccount", "ClusterRoleBinding",
        "Deployment", "Service",
    ]  # fmt: skip
    no_ui = load_text(CASES["single-ipv4"] + "ui: {kind: none}\n")
    assert [o["kind"] for o in k8s.all_cluster_objects(no_ui)] == ["Installation", "APIServer"]
    off = load_text(CASES["single-ipv4"] + "kubernetes: {enabled: false}\n")
    assert k8s.all_cluster_objects(off) == []


def test_join_secrets_are_parameters() -> None:
    cfg = config("cp3-etcd3")
    token = "abcdef.0123456789abcdef"
    hashes = ["sha256:" + "ab" * 32]
    key = "cd" * 32
    join = _docs(
        k8s.kubeadm_join_config(
            cfg, "cp2", control_plane=True, token=token, ca_cert_hashes=hashes, certificate_key=key
        )
    )[0]
    assert join["discovery"]["bootstrapToken"]["token"] == token
    assert join["discovery"]["bootstrapToken"]["caCertHashes"] == hashes
    assert join["controlPlane"]["certificateKey"] == key
    with pytest.raises(ValueError, match="pinning"):
        k8s.kubeadm_join_config(cfg, "cp2", control_plane=True, token=token, ca_cert_hashes=[])
    with pytest.raises(ValueError, match="control plane"):
        k8s.kubeadm_join_config(cfg, "cp2", control_plane=False, token=token, ca_cert_hashes=hashes)
    with pytest.raises(ValueError, match="etcd-only"):
        k8s.kubeadm_join_config(
            cfg, "etcd1", control_plane=False, token=token, ca_cert_hashes=hashes
        )
    with pytest.raises(ValidationError):  # a malformed token never reaches a file
        k8s.kubeadm_join_config(cfg, "cp2", control_plane=True, token="x", ca_cert_hashes=hashes)
    with pytest.raises(ValueError, match="control-plane role"):
        k8s.kubeadm_init_config(cfg, "etcd1")
    with pytest.raises(ValueError, match="no host"):
        k8s.kubeadm_init_config(cfg, "nope")


def test_ipv6_endpoint_must_be_bracketed() -> None:
    cfg = load_text(
        CASES["single-ipv4"] + 'kubernetes: {controlPlaneEndpoint: "2001:db8::1:6443"}\n'
    )
    with pytest.raises(ValueError, match="bracket"):
        k8s.control_plane_endpoint(cfg)


def test_kubernetes_version_choices() -> None:
    minor_only = config("single-ipv4")
    assert k8s.kubernetes_version(minor_only) == "stable-1.36"
    assert k8s.kubernetes_version(minor_only, "v1.36.7") == "v1.36.7"
    assert k8s.kubernetes_version(minor_only, "1.36.7") == "v1.36.7"
    with pytest.raises(ValueError, match="minor"):
        k8s.kubernetes_version(minor_only, "v1.37.0")
    pinned = config("single-dualstack")
    assert k8s.kubernetes_version(pinned, "v1.36.9") == "v1.36.4"
    init = _by_kind(k8s.kubeadm_init_config(minor_only, "node1", kubeadm_version="v1.36.7"))
    assert init["ClusterConfiguration"]["kubernetesVersion"] == "v1.36.7"


def test_rendered_files_start_with_a_header() -> None:
    for files in RENDERED.values():
        for name, text in files.items():
            if name.endswith((".yaml", ".conf", ".toml")) and not name.startswith(
                ("calico", "headlamp", "flannel")
            ):
                assert text.startswith("# Written by homekube"), name
