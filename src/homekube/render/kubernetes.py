"""Render every Kubernetes-layer file and object from a ClusterConfig — pure, typed, no I/O.

What is rendered and where the values come from (sections of shared/reference/facts.md):

* kubeadm ``init`` / ``join`` configs (v1beta4 + KubeletConfiguration + KubeProxyConfiguration)
  — §7.1–7.3a, §1.3, §1.4, §6.3;
* the CRI-O drop-in — §1.3, §2.1;
* the package repository files for pkgs.k8s.io and the isv:cri-o OBS project — §2.1–2.3;
* the Calico ``Installation`` / ``APIServer`` and the manifest URLs — §8;
* the Headlamp web UI objects — §10.

Everything here is built from the typed models in :mod:`kubeadm_types` and
:mod:`calico_types` (or checked by ``kubernetes-validate`` in the tests, for built-in kinds)
and written by :mod:`yamlout`. Validated, not executed here: nothing in this environment can
run kubeadm, a kubelet, CRI-O or Calico.

Mirror layout (``artifacts.mirror``, always ending in ``/``). Every upstream URL rendered here
is replaced by a path under the mirror that keeps the upstream tree below it, so a plain
``wget --mirror`` / ``apt-mirror`` / ``reposync`` copy works::

    <mirror>kubernetes/v1.36/deb/            ← https://pkgs.k8s.io/core:/stable:/v1.36/deb/
    <mirror>kubernetes/v1.36/rpm/            ← https://pkgs.k8s.io/core:/stable:/v1.36/rpm/
    <mirror>cri-o/v1.36/deb/                 ← https://download.opensuse.org/repositories/isv:/cri-o:/stable:/v1.36/deb/
    <mirror>cri-o/v1.36/rpm/                 ← …/isv:/cri-o:/stable:/v1.36/rpm/
    <mirror>calico/v3.32.1/<manifest>.yaml   ← https://raw.githubusercontent.com/projectcalico/calico/v3.32.1/manifests/
    (etcd tarballs live under <mirror>etcd/vX.Y.Z/ — rendered elsewhere)

Package signatures are still checked with the upstream keys, fetched from the same mirror
path (``Release.key`` / ``repodata/repomd.xml.key``). Container images come from
`artifacts.imageRepository` when set (:mod:`images`); containerd's and cri-o's own files are
in :mod:`runtime`, flannel's objects in :mod:`flannel`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from homekube.config.model import ClusterConfig, HostSpec
from homekube.etcd import layout as etcd_layout
from homekube.osfamily import Family, OsFamily, RepoFile, family_named
from homekube.render import tomlout
from homekube.render.flannel import flannel_objects
from homekube.render.images import image, pause_image
from homekube.render.runtime import CRIO_SOCKET, cri_socket
from homekube.render.yamlout import dump_all

if TYPE_CHECKING:  # the pydantic models cost ~55 ms to import: only when rendering
    from homekube.render import calico_types as calico
    from homekube.render import kubeadm_types as kt

__all__ = [
    "APISERVER_ETCD_CLIENT_CERT",
    "APISERVER_ETCD_CLIENT_KEY",
    "API_SERVER_PORT",
    "CALICO_MANIFESTS",
    "CALICO_VERSION",
    "CERTIFICATES_DIR",
    "CRIO_DROPIN_PATH",
    "CRI_SOCKET",
    "ETCD_CA_FILE",
    "HEADLAMP_IMAGE",
    "HEADLAMP_NAMESPACE",
    "HEADLAMP_PORT",
    "PAUSE_VERSIONS",
    "REDACTED_CA_CERT_HASH",
    "REDACTED_CERTIFICATE_KEY",
    "REDACTED_TOKEN",
    "TIGERA_OPERATOR_IMAGE",
    "Artifact",
    "RepoFile",
    "all_cluster_objects",
    "api_server_sans",
    "calico_installation",
    "calico_manifest_urls",
    "control_plane_endpoint",
    "crio_dropin",
    "etcd_servers",
    "headlamp_objects",
    "ignored_preflight_checks",
    "ipv4_encapsulation",
    "kubeadm_init_config",
    "kubeadm_join_config",
    "kubernetes_version",
    "repo_files",
]

# --------------------------------------------------------------------------------------------
# Constants (each with its source)
# --------------------------------------------------------------------------------------------

CRI_SOCKET = CRIO_SOCKET
"""CRI-O's socket (facts.md §2.4); the configured runtime's is :func:`runtime.cri_socket`."""

CERTIFICATES_DIR = "/etc/kubernetes/pki"
"""kubeadm's ``certificatesDir``; the apiserver pod mounts it, so the etcd files live here."""

ETCD_CA_FILE = etcd_layout.CA_CERT
APISERVER_ETCD_CLIENT_CERT = f"{CERTIFICATES_DIR}/apiserver-etcd-client.crt"
APISERVER_ETCD_CLIENT_KEY = f"{CERTIFICATES_DIR}/apiserver-etcd-client.key"
"""The dedicated apiserver→etcd client pair, never the etcd server cert (facts.md §6.2, §11.10)."""

API_SERVER_PORT = 6443
ETCD_CLIENT_PORT = etcd_layout.CLIENT_PORT

CRIO_DROPIN_PATH = "/etc/crio/crio.conf.d/10-homekube.conf"

PAUSE_VERSIONS: Mapping[str, str] = {
    "1.34": "3.10.1",
    "1.35": "3.10.1",
    "1.36": "3.10.2",
    "1.37": "3.10.2",
}
"""kubeadm's ``constants.PauseVersion`` per minor, so CRI-O's sandbox image matches what kubeadm
preflight expects (a mismatch is a preflight warning). 1.35 = 3.10.1 and 1.36 = 3.10.2 are
read from kubeadm's constants.go in k8s.io/kubernetes v1.35.4 and v1.36.3 (and the lab's rig
tests compare them with ``kubeadm config images list``); 1.34 = 3.10.1 and 1.37 = 3.10.2 are
UNCONFIRMED."""

CALICO_VERSION = "v3.32.1"
"""Calico release (facts.md §0); tested by Calico on Kubernetes 1.34–1.36 (§8.1)."""

TIGERA_OPERATOR_IMAGE = "quay.io/tigera/operator"
"""The operator's image repository in ``tigera-operator.yaml`` (v1.42.3 for Calico v3.32.1,
facts.md §0); the tag stays whatever the pinned manifest says."""

CALICO_MANIFESTS: tuple[str, ...] = ("v1_crd_projectcalico_org.yaml", "tigera-operator.yaml")
"""Apply order: the CRDs first (split out since 3.30), then the operator (facts.md §8.1)."""

HEADLAMP_IMAGE = "ghcr.io/headlamp-k8s/headlamp:v0.44.0"
"""Headlamp pinned by tag. v0.44.0 is the newest tag in the upstream chart's rendered test
templates (kubernetes-sigs/headlamp charts/headlamp/tests/expected_templates); facts.md saw
v0.43.0; third parties mention v0.45.0 (UNCONFIRMED). No digest: none could be fetched here."""

HEADLAMP_NAMESPACE = "headlamp"
HEADLAMP_PORT = 4466
"""Headlamp's HTTP port (chart ``containerPort: 4466``; kubernetes-headlamp.yaml)."""

REDACTED_TOKEN = "xxxxxx.xxxxxxxxxxxxxxxx"  # noqa: S105 - a placeholder, not a secret
"""Stand-in bootstrap token for ``plan`` output: well-formed, obviously not a secret."""
REDACTED_CA_CERT_HASH = "sha256:" + "0" * 64
REDACTED_CERTIFICATE_KEY = "0" * 64

_HEADER = "# Written by homekube from cluster.yaml ({name}); local edits are overwritten.\n"

# --------------------------------------------------------------------------------------------
# Small value types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """A file to download: where from, what to call it, and the SHA-256 it must have.

    ``sha256`` may be ``None`` for upstream URLs — no download is possible where this code is
    built, so the hashes cannot be computed and shipped; those downloads rely on TLS to
    raw.githubusercontent.com and an immutable release tag. For a mirror, the hash is required:
    a mirror is only as trustworthy as the pin that checks it.
    """

    url: str
    filename: str
    sha256: str | None


# --------------------------------------------------------------------------------------------
# Addresses and endpoints
# --------------------------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _url_host(addr: IPAddress | str) -> str:
    """Bracket IPv6 literals for use in URLs and host:port (facts.md §4.3)."""
    text = str(addr)
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return text
    return f"[{parsed}]" if parsed.version == 6 else text


def _families(cfg: ClusterConfig) -> list[int]:
    """Address families in cluster order; the first is primary (first service range, §7.2)."""
    return [net.version for net in cfg.network.services]


def _address(host: HostSpec, family: int) -> IPAddress:
    addr: IPAddress | None = host.ipv4 if family == 4 else host.ipv6
    if addr is None:
        raise ValueError(f"host {host.name} has no IPv{family} address, which the network needs")
    return addr


def _primary_address(cfg: ClusterConfig, host: HostSpec) -> IPAddress:
    return _address(host, _families(cfg)[0])


def _node_ips(cfg: ClusterConfig, host: HostSpec) -> list[IPAddress]:
    return [_address(host, family) for family in _families(cfg)]


def control_plane_endpoint(cfg: ClusterConfig) -> str:
    """Return ``host:port`` for the API: the virtual address (`endpoint`), the configured one,
    or the first control plane's.

    Always set, because kubeadm cannot turn a cluster initialised without it into an HA one
    later (facts.md §7.3, §11.21).
    """
    if cfg.kubernetes.endpoint is not None:
        return f"{cfg.kubernetes.endpoint.address}:{API_SERVER_PORT}"
    if cfg.kubernetes.control_plane_endpoint:
        endpoint = cfg.kubernetes.control_plane_endpoint
        host = endpoint.rpartition(":")[0]
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"controlPlaneEndpoint {endpoint!r}: bracket an IPv6 address")
        return endpoint
    if not cfg.control_planes:
        raise ValueError("the cluster has no control-plane host")
    first = cfg.control_planes[0]
    return f"{_url_host(_primary_address(cfg, first))}:{API_SERVER_PORT}"


def _endpoint_host(endpoint: str) -> str:
    host, _, _ = endpoint.rpartition(":")
    return host.removeprefix("[").removesuffix("]")


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def etcd_servers(cfg: ClusterConfig) -> list[str]:
    """The etcd client URLs every API server uses (kubeadm-config's etcd.external.endpoints,
    the manifest's --etcd-servers): one per etcd member, in cluster.yaml's order."""
    return [f"https://{_url_host(_primary_address(cfg, h))}:{ETCD_CLIENT_PORT}"
            for h in cfg.etcd_hosts]


def api_server_sans(cfg: ClusterConfig) -> list[str]:
    """The SANs cluster.yaml asks of every API server certificate (see `_cert_sans`)."""
    return _cert_sans(cfg)


def _cert_sans(cfg: ClusterConfig) -> list[str]:
    """API server SANs: the endpoint's host, every control-plane address, then the extras.

    kubeadm adds the node name, the service IP and the advertise address itself (facts.md
    §6.1); listing both families of every control plane makes IPv6 and any-node access work.
    """
    sans = [_endpoint_host(control_plane_endpoint(cfg))]
    for cp in cfg.control_planes:
        sans += [str(a) for a in _node_ips(cfg, cp)]
    sans += cfg.kubernetes.cert_sans
    return _dedupe(sans)


def _host(cfg: ClusterConfig, name: str) -> HostSpec:
    try:
        return cfg.host(name)
    except KeyError:
        raise ValueError(f"no host named {name!r} in the cluster config") from None


# --------------------------------------------------------------------------------------------
# kubeadm
# --------------------------------------------------------------------------------------------


def kubernetes_version(cfg: ClusterConfig, kubeadm_version: str | None = None) -> str:
    """Return the ``kubernetesVersion`` for ClusterConfiguration.

    * ``kubernetes.version: 1.36.4`` → ``v1.36.4``.
    * only a minor (``1.36``) and the installed kubeadm's version known (``kubeadm version -o
      short`` → ``kubeadm_version``) → that version, so control plane and packages agree.
    * only a minor and nothing else known → ``stable-1.36``. kubeadm accepts such labels
      (``util/version.go``: ``stable-1.X`` matches ``kubeReleaseLabelRegex``) and resolves them
      from dl.k8s.io; offline it falls back to its own version. Online it may pick a newer
      1.36 patch than the installed kubelet — allowed by the skew policy, but not reproducible,
      which is why callers should pass ``kubeadm_version`` at apply time.
    """
    minor = cfg.kubernetes.minor
    if kubeadm_version is not None:
        m = re.fullmatch(r"v?(1\.\d+)\.\d+", kubeadm_version.strip())
        if not m:
            raise ValueError(f"{kubeadm_version!r} is not a kubeadm version like v1.36.4")
        if m.group(1) != minor:
            raise ValueError(
                f"installed kubeadm {kubeadm_version} is not the configured minor {minor}"
            )
    if cfg.kubernetes.version.count(".") == 2:
        return f"v{cfg.kubernetes.version}"
    if kubeadm_version is not None:
        return "v" + kubeadm_version.strip().removeprefix("v")
    return f"stable-{minor}"


def ignored_preflight_checks(cfg: ClusterConfig) -> list[str]:
    """kubeadm preflight checks to ignore: SystemVerification fails on cgroup v1, so
    `allowCgroupV1` is the explicit opt-in for it; the rest are the user's, by name."""
    checks = ["SystemVerification"] if cfg.kubernetes.allow_cgroup_v1 else []
    return _dedupe([*checks, *cfg.kubernetes.ignore_preflight_errors])


def _node_registration(cfg: ClusterConfig, host: HostSpec) -> kt.NodeRegistrationOptions:
    """Name, CRI socket, node IPs, and the taint decision for ``host``.

    ``taints: []`` for a control plane that is also a worker (kubeadm then adds no taint; the
    2020 post's ``node-role.kubernetes.io/master`` removal is a no-op today — facts.md §7.5,
    §11.15). A plain control plane keeps ``taints`` unset, i.e. kubeadm's control-plane taint.
    ``node-ip`` lists every family in cluster order, which dual stack needs (§7.2) and which
    Calico's ``NodeInternalIP`` autodetection reads (§8.3).
    """
    from homekube.render import kubeadm_types as kt
    untainted = host.has("control-plane") and host.has("worker")
    node_ip = ",".join(str(a) for a in _node_ips(cfg, host))
    return kt.NodeRegistrationOptions(
        name=host.name,
        cri_socket=cri_socket(cfg),
        taints=[] if untainted else None,
        kubelet_extra_args=[kt.Arg(name="node-ip", value=node_ip)],
        ignore_preflight_errors=ignored_preflight_checks(cfg) or None,
    )


def _encryption_algorithm(cfg: ClusterConfig) -> kt.EncryptionAlgorithm:
    return "ECDSA-P256" if cfg.etcd.key_type == "ecdsa-p256" else "RSA-2048"


def _cluster_configuration(
    cfg: ClusterConfig, kubeadm_version: str | None
) -> kt.ClusterConfiguration:
    from homekube.render import kubeadm_types as kt
    endpoints = etcd_servers(cfg)
    return kt.ClusterConfiguration(
        etcd=kt.Etcd(
            external=kt.ExternalEtcd(
                endpoints=endpoints,
                ca_file=ETCD_CA_FILE,
                cert_file=APISERVER_ETCD_CLIENT_CERT,
                key_file=APISERVER_ETCD_CLIENT_KEY,
            )
        ),
        networking=kt.Networking(
            pod_subnet=",".join(str(n) for n in cfg.network.pods),
            service_subnet=",".join(str(n) for n in cfg.network.services),
        ),
        kubernetes_version=kubernetes_version(cfg, kubeadm_version),
        control_plane_endpoint=control_plane_endpoint(cfg),
        api_server=kt.APIServer(cert_sans=_cert_sans(cfg)),
        certificates_dir=CERTIFICATES_DIR,
        image_repository=cfg.artifacts.image_repository,
        cluster_name=cfg.name,
        encryption_algorithm=_encryption_algorithm(cfg),
    )


def _kubelet_configuration(cfg: ClusterConfig) -> kt.KubeletConfiguration:
    """Kubelet settings shared by every node (kubeadm stores them in kubelet-config).

    ``cgroupDriver`` matches the runtime's (runc ``SystemdCgroup``, cri-o ``cgroup_manager``);
    since 1.34 the kubelet asks the runtime anyway (§1.3), older ones read it here.
    ``failCgroupV1: true`` states the 1.35 default explicitly, so 1.34 behaves the same, unless
    ``kubernetes.allowCgroupV1`` opts out. Swap is allowed only through NodeSwap's
    ``LimitedSwap`` (§1.4). The rest comes from ``kubernetes.kubelet`` when set.
    """
    from homekube.render import kubeadm_types as kt
    k = cfg.kubernetes
    kl = k.kubelet
    swap = cfg.host_prep.swap == "allowed"
    return kt.KubeletConfiguration(
        cgroup_driver=k.cgroup_driver,
        image_gc_high_threshold_percent=kl.image_gc_high_threshold_percent,
        image_gc_low_threshold_percent=kl.image_gc_low_threshold_percent,
        max_pods=kl.max_pods,
        eviction_hard=dict(kl.eviction_hard) if kl.eviction_hard is not None else None,
        container_runtime_endpoint=cri_socket(cfg),
        fail_cgroup_v1=not k.allow_cgroup_v1,
        fail_swap_on=False if swap else None,
        memory_swap=kt.MemorySwapConfiguration(swap_behavior="LimitedSwap") if swap else None,
        resolv_conf=kl.resolv_conf,
        system_reserved=dict(kl.system_reserved) if kl.system_reserved else None,
        kube_reserved=dict(kl.kube_reserved) if kl.kube_reserved else None,
    )


def _kube_proxy_configuration(cfg: ClusterConfig) -> kt.KubeProxyConfiguration:
    """The mode (§7.3a) and conntrack sizing; kubeadm fills ``clusterCIDR`` from ``podSubnet``."""
    from homekube.render import kubeadm_types as kt
    per_core = cfg.kubernetes.kube_proxy.conntrack_max_per_core
    return kt.KubeProxyConfiguration(
        mode=cfg.kubernetes.proxy_mode,
        conntrack=kt.KubeProxyConntrackConfiguration(max_per_core=per_core)
        if per_core is not None else None,
    )


def kubeadm_init_config(
    cfg: ClusterConfig,
    host: str,
    *,
    kubeadm_version: str | None = None,
    certificate_key: str | None = None,
) -> str:
    """Render ``kubeadm init --config`` for control plane ``host`` (four YAML documents).

    InitConfiguration (this node), ClusterConfiguration (external TLS etcd, dual-stack
    subnets, endpoint, SANs, key algorithm), KubeletConfiguration, KubeProxyConfiguration —
    the composed example of facts.md §7.3 made general. ``certificate_key`` (64 hex digits) is
    what ``--upload-certs`` encrypts the control-plane certificates with; pass the same key to
    :func:`kubeadm_join_config` for additional control planes.
    """
    from homekube.render import kubeadm_types as kt
    node = _host(cfg, host)
    if not node.has("control-plane"):
        raise ValueError(f"{host} has no control-plane role; only a control plane runs init")
    init = kt.InitConfiguration(
        node_registration=_node_registration(cfg, node),
        local_api_endpoint=kt.APIEndpoint(
            advertise_address=str(_primary_address(cfg, node)), bind_port=API_SERVER_PORT
        ),
        certificate_key=certificate_key,
    )
    cluster = _cluster_configuration(cfg, kubeadm_version)
    docs = [
        init.to_dict(),
        cluster.to_dict(),
        _kubelet_configuration(cfg).to_dict(),
        _kube_proxy_configuration(cfg).to_dict(),
    ]
    note = ""
    if cluster.kubernetes_version and not cluster.kubernetes_version.startswith("v"):
        note = (f"# kubernetesVersion {cluster.kubernetes_version} is a placeholder: apply sets "
                "the installed kubeadm's exact version\n# before kubeadm runs (kubeadm itself "
                "would look the label up on dl.k8s.io).\n")
    return _HEADER.format(name=cfg.name) + note + dump_all(docs)


def kubeadm_join_config(
    cfg: ClusterConfig,
    host: str,
    *,
    control_plane: bool,
    token: str,
    ca_cert_hashes: Sequence[str],
    certificate_key: str | None = None,
) -> str:
    """Render ``kubeadm join --config`` for ``host``.

    The secrets are required parameters, never defaults: at apply time callers pass the real
    bootstrap token, the CA public-key pin(s) (``sha256:<hex>``) and, for a control plane, the
    certificate key; ``plan`` passes :data:`REDACTED_TOKEN` and :data:`REDACTED_CA_CERT_HASH`,
    which are well-formed (so the output validates) but obviously fake. ``control_plane`` must
    agree with the host's roles — a mismatch is a caller bug. Discovery always pins the CA:
    an empty ``ca_cert_hashes`` would disable pinning, so it is refused.
    """
    from homekube.render import kubeadm_types as kt
    node = _host(cfg, host)
    if control_plane != node.has("control-plane"):
        role = "is" if node.has("control-plane") else "is not"
        raise ValueError(f"{host} {role} a control plane but control_plane={control_plane}")
    if not (node.has("control-plane") or node.has("worker")):
        raise ValueError(f"{host} is etcd-only; it does not join the Kubernetes cluster")
    if not ca_cert_hashes:
        raise ValueError("at least one CA cert hash is required (an empty list disables pinning)")
    join_cp = None
    if control_plane:
        join_cp = kt.JoinControlPlane(
            local_api_endpoint=kt.APIEndpoint(
                advertise_address=str(_primary_address(cfg, node)), bind_port=API_SERVER_PORT
            ),
            certificate_key=certificate_key,
        )
    join = kt.JoinConfiguration(
        node_registration=_node_registration(cfg, node),
        discovery=kt.Discovery(
            bootstrap_token=kt.BootstrapTokenDiscovery(
                token=token,
                api_server_endpoint=control_plane_endpoint(cfg),
                ca_cert_hashes=list(ca_cert_hashes),
            )
        ),
        control_plane=join_cp,
    )
    return _HEADER.format(name=cfg.name) + dump_all([join.to_dict()])


# --------------------------------------------------------------------------------------------
# CRI-O
# --------------------------------------------------------------------------------------------


def crio_dropin(cfg: ClusterConfig) -> str:
    """Render ``/etc/crio/crio.conf.d/10-homekube.conf`` (TOML).

    ``cgroup_manager`` matches the kubelet's ``cgroupDriver`` (CRI-O's own default is systemd,
    but stating it survives a distro config that says otherwise — facts.md §1.3); with
    ``cgroupfs`` CRI-O needs ``conmon_cgroup = "pod"``. ``pause_image`` is the image kubeadm
    of this minor expects (:data:`PAUSE_VERSIONS`, under `artifacts.imageRepository`). The
    bridge CNI config the package ships stays ``.disabled`` (§2.1): the CNI provides the pod
    network, so nothing is written for it here.
    """
    pause = PAUSE_VERSIONS[cfg.kubernetes.minor]
    runtime: dict[str, Any] = {"cgroup_manager": cfg.kubernetes.cgroup_driver}
    if cfg.kubernetes.cgroup_driver == "cgroupfs":
        runtime["conmon_cgroup"] = "pod"
    cni = "Calico" if cfg.network.cni == "calico" else "flannel"
    doc = {"crio": {"runtime": runtime, "image": {"pause_image": pause_image(cfg, pause)}}}
    return (
        _HEADER.format(name=cfg.name)
        + f"# The bridge CNI config CRI-O ships stays disabled: {cni} provides the pod network.\n"
        + "\n" + tomlout.dumps(doc)
    )


# --------------------------------------------------------------------------------------------
# Package repositories
# --------------------------------------------------------------------------------------------


def _repo_base(cfg: ClusterConfig, project: Literal["kubernetes", "cri-o"]) -> str:
    """Base URL (without ``deb/``/``rpm/``) of one of the two per-minor repositories (§2.1)."""
    stream = f"v{cfg.kubernetes.minor}"  # CRI-O minor == Kubernetes minor
    if cfg.artifacts.mirror:
        return f"{cfg.artifacts.mirror}{project}/{stream}/"
    if project == "kubernetes":
        return f"https://pkgs.k8s.io/core:/stable:/{stream}/"
    return f"https://download.opensuse.org/repositories/isv:/cri-o:/stable:/{stream}/"


def repo_files(cfg: ClusterConfig, family: Family | OsFamily) -> list[RepoFile]:
    """Render the Kubernetes and CRI-O repository definitions for one OS family.

    debian: one-line ``.list`` files with ``signed-by`` keyrings under ``/etc/apt/keyrings``
    (§2.3; pin with ``apt-mark hold``). rhel: ``.repo`` files; the Kubernetes one carries
    ``exclude=`` so ``dnf upgrade`` never bumps the cluster by accident — install with
    ``--disableexcludes=kubernetes`` (§2.2).
    """
    fam = family_named(family)
    header = _HEADER.format(name=cfg.name)
    projects: tuple[tuple[Literal["kubernetes", "cri-o"], str], ...] = (
        ("kubernetes", "Kubernetes"),
        ("cri-o", "CRI-O"),
    ) if cfg.kubernetes.runtime == "cri-o" else (("kubernetes", "Kubernetes"),)
    return [fam.repository(project, title, _repo_base(cfg, project), header) for project, title in projects]


# --------------------------------------------------------------------------------------------
# Calico
# --------------------------------------------------------------------------------------------

_IPIP_FALLBACK: Mapping[str, calico.EncapsulationType] = {
    "IPIP": "VXLAN",
    "IPIPCrossSubnet": "VXLANCrossSubnet",
}


def ipv4_encapsulation(cfg: ClusterConfig, kernel_has_ipip: bool) -> calico.EncapsulationType:
    """Return the IPv4 pool's encapsulation, trading IP-in-IP for VXLAN when the kernel lacks it.

    ``kernel_has_ipip`` is a host fact (the ``ipip`` module / ``tunl0``). The lab's
    systemd-nspawn hosts run a kernel without IPIP, so there ``IPIP`` becomes ``VXLAN`` and
    ``IPIPCrossSubnet`` becomes ``VXLANCrossSubnet`` — same topology, different tunnel.
    """
    configured: calico.EncapsulationType = cfg.network.encapsulation
    if not kernel_has_ipip:
        return _IPIP_FALLBACK.get(configured, configured)
    return configured


def calico_installation(
    cfg: ClusterConfig, *, kernel_has_ipip: bool = True
) -> list[dict[str, Any]]:
    """Render the Calico ``Installation`` and ``APIServer`` (facts.md §8.3, made general).

    One pool per pod network, equal to it (pools must lie inside ``podSubnet``, §8.1): IPv4
    blocks /26 with the configured encapsulation, IPv6 blocks /122 with VXLAN (IP-in-IP is
    IPv4-only; ``None`` stays ``None``). ``natOutgoing`` is the enum ``Enabled`` — not a boolean
    (§11.16). Node addresses come from the Node's InternalIP per family, which the kubelet got
    from ``node-ip``. With only VXLAN pools Felix programs the routes and BGP is not needed, so
    it is switched off (Calico 3.32 docs, networking/configuring/vxlan-ipip.mdx) — no BIRD,
    nothing on port 179. The stock bundle's Goldmane and Whisker are left out on purpose: a
    4 GiB box has better uses for the memory.
    """
    from homekube.render import calico_types as calico
    # NOTE: if cfg.network.encapsulation is IPIP or IPIPCrossSubnet, the lab kernel lacks IPIP —
    # callers there pass kernel_has_ipip=False and get the VXLAN equivalent instead.
    v4_encap = ipv4_encapsulation(cfg, kernel_has_ipip)
    v6_encap: calico.EncapsulationType = "None" if v4_encap == "None" else "VXLAN"
    pools: list[calico.IPPool] = []
    for net in cfg.network.pods:
        v4 = net.version == 4
        pools.append(
            calico.IPPool(
                name=f"default-ipv{net.version}-ippool",
                cidr=str(net),
                block_size=26 if v4 else 122,
                encapsulation=v4_encap if v4 else v6_encap,
                nat_outgoing="Enabled",
                node_selector="all()",
            )
        )
    families = {net.version for net in cfg.network.pods}
    by_k8s = calico.NodeAddressAutodetection(kubernetes="NodeInternalIP")
    vxlan_only = all(p.encapsulation in ("VXLAN", "VXLANCrossSubnet") for p in pools)
    repo = cfg.artifacts.image_repository
    installation = calico.Installation(
        spec=calico.InstallationSpec(
            # <registry><imagePath>/<name>: with the default path `calico` this is the same
            # rule as every other image (render/images.py)
            registry=f"{repo}/" if repo else None,
            calico_network=calico.CalicoNetworkSpec(
                bgp="Disabled" if vxlan_only else None,
                ip_pools=pools,
                # an empty object disables detection for a family the cluster does not use;
                # leaving v4 unset would make Calico look for an IPv4 address anyway
                node_address_autodetection_v4=(
                    by_k8s if 4 in families else calico.NodeAddressAutodetection()
                ),
                node_address_autodetection_v6=by_k8s if 6 in families else None,
            )
        )
    )
    return [installation.to_dict(), calico.APIServer().to_dict()]


def calico_manifest_urls(
    cfg: ClusterConfig, *, sha256: Mapping[str, str] | None = None
) -> list[Artifact]:
    """List the Calico manifests to ``kubectl create``, CRDs first (facts.md §8.1).

    ``sha256`` maps file names to their SHA-256. Upstream downloads may go without (see
    :class:`Artifact`); with ``artifacts.mirror`` set every file must have one, or this raises.
    """
    hashes = dict(sha256 or {})
    out: list[Artifact] = []
    for filename in CALICO_MANIFESTS:
        digest = hashes.get(filename)
        if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{filename}: {digest!r} is not a SHA-256 in lowercase hex")
        if cfg.artifacts.mirror:
            if digest is None:
                raise ValueError(
                    f"{filename}: a mirror ({cfg.artifacts.mirror}) needs the file's SHA-256"
                )
            url = f"{cfg.artifacts.mirror}calico/{CALICO_VERSION}/{filename}"
        else:
            url = (
                "https://raw.githubusercontent.com/projectcalico/calico/"
                f"{CALICO_VERSION}/manifests/{filename}"
            )
        out.append(Artifact(url=url, filename=filename, sha256=digest))
    return out


# --------------------------------------------------------------------------------------------
# Headlamp
# --------------------------------------------------------------------------------------------

_HEADLAMP_SELECTOR = {
    "app.kubernetes.io/name": "headlamp",
    "app.kubernetes.io/instance": "headlamp",
}
_HEADLAMP_LABELS = {**_HEADLAMP_SELECTOR, "app.kubernetes.io/managed-by": "homekube"}


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(_HEADLAMP_LABELS)
    return meta


def headlamp_objects(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """Render Headlamp (the Dashboard's recommended successor, facts.md §10), in apply order.

    Namespace (Pod Security ``restricted`` enforced — the pod below meets it), ServiceAccount,
    ClusterRoleBinding to ``view`` (``cluster-admin`` only when ``ui.access: admin``; the
    binding's name carries the role because ``roleRef`` is immutable), Deployment, Service
    (ClusterIP 80 → 4466). No token Secret: users get short-lived tokens from ``kubectl create
    token`` / ``homekube ui`` (§10, §11.18). The pod mounts its ServiceAccount token because
    ``-in-cluster`` needs it to find the API server; it has the same rights as those tokens.
    Sizing: requests 20m/64Mi, limits 500m/256Mi — room on a 4 GiB node.
    """
    ns = HEADLAMP_NAMESPACE
    role = "cluster-admin" if cfg.ui.access == "admin" else "view"
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns,
            "labels": {**_HEADLAMP_LABELS, "pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta("headlamp", ns),
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(f"headlamp-{role}"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "headlamp", "namespace": ns}],
    }
    probe = {"httpGet": {"path": "/", "port": "http", "scheme": "HTTP"}}
    container = {
        "name": "headlamp",
        "image": image(cfg, HEADLAMP_IMAGE),
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "-in-cluster",
            f"-in-cluster-context-name={cfg.name}",
            "-plugins-dir=/headlamp/plugins",
        ],
        "ports": [{"name": "http", "containerPort": HEADLAMP_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            **probe,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            **probe,
            "initialDelaySeconds": 10,
            "periodSeconds": 20,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        # the chart's own readOnlyRootFilesystem variant: only /tmp needs to be writable
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("headlamp", ns),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": dict(_HEADLAMP_SELECTOR)},
            "template": {
                "metadata": {"labels": dict(_HEADLAMP_LABELS)},
                "spec": {
                    "serviceAccountName": "headlamp",
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # uid/gid 100/101 as in the upstream chart's defaults
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 100,
                        "runAsGroup": 101,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("headlamp", ns),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(_HEADLAMP_SELECTOR),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    if cfg.ui.kind == "token":
        return [namespace, service_account, binding]
    return [namespace, service_account, binding, deployment, service]


# --------------------------------------------------------------------------------------------
# Everything applied through the API
# --------------------------------------------------------------------------------------------


def all_cluster_objects(
    cfg: ClusterConfig, *, kernel_has_ipip: bool = True
) -> list[dict[str, Any]]:
    """Return every object homekube applies through the API, in apply order.

    The CNI first (Calico's CRDs and operator come from :func:`calico_manifest_urls`,
    created before these; flannel is built-in kinds only), then the UI. Empty when the
    Kubernetes layer is switched off.
    """
    if not cfg.kubernetes.enabled:
        return []
    if cfg.network.cni == "flannel":
        objects = flannel_objects(cfg)
    else:
        objects = calico_installation(cfg, kernel_has_ipip=kernel_has_ipip)
    if cfg.ui.kind != "none":
        objects += headlamp_objects(cfg)
    return objects
