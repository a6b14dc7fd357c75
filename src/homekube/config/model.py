"""The cluster.yaml model: one declarative description of the whole cluster.

Keys are camelCase like kubeadm's and k0sctl's so that people who know those feel at home;
unknown keys are rejected because a typo that is silently ignored (the seed's
`bridge-navailableables`) is the worst kind of config error.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic.alias_generators import to_camel

from homekube.etcd.layout import DEFAULT_DATA_DIR

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def _as_text(v: object) -> object:
    """Addresses and networks are written as text: pydantic would read YAML `true` as 0.0.0.1
    and an integer as the address with that number, silently."""
    if isinstance(v, bool | int):
        raise ValueError(f"{v!r}: write addresses and networks as text (e.g. 192.0.2.10, 10.42.0.0/16)")
    return v


NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"

#: never accepted as etcd's data or backup directory: `reset` removes those two whole
SYSTEM_DIRS = frozenset({
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib",
    "/usr/local", "/usr/sbin", "/usr/share", "/var", "/var/backups", "/var/cache", "/var/lib",
    "/var/log", "/var/opt", "/var/spool", "/var/tmp",
})


def _host_dir(v: str) -> str:
    """A directory homekube owns on the hosts (created 0700, removed by `reset`)."""
    if not (v.startswith("/") and v.isprintable() and not set(v) & set("\"'\\$`")):
        raise ValueError(f"{v!r} is not an absolute path of printable characters "
                         "(no quotes, backslashes, $ or `)")
    if v == "/" or v in SYSTEM_DIRS:
        raise ValueError(f"{v} is a system directory: homekube owns this directory and `reset` removes it")
    if any(part in ("", ".", "..") for part in v.split("/")[1:]):
        raise ValueError(f"{v!r} is not a normalized path (no //, /./, /../ or trailing /)")
    return v


def _login_name(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}", v):
        raise ValueError(f"{v!r} is not a login name (letters, digits, . _ - @; at most 64)")
    return v


HostDir = Annotated[str, AfterValidator(_host_dir)]
LoginName = Annotated[str, AfterValidator(_login_name)]

#: etcd release matched to each Kubernetes minor (facts.md §3.1: the practical choice for an
#: external etcd). kubeadm's minimum for an external etcd is 3.5.24.
ETCD_FOR_KUBERNETES: dict[str, str] = {
    "1.34": "3.6.14",
    "1.35": "3.6.14",
    "1.36": "3.6.14",
    "1.37": "3.7.1",
}
SUPPORTED_KUBERNETES = tuple(ETCD_FOR_KUBERNETES)


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=True,
    )


#: the oldest containerd each Kubernetes minor supports (containerd RELEASES.md "Kubernetes
#: Support"; 1.37 is UNCONFIRMED: assumed equal to 1.36)
CONTAINERD_MIN: dict[str, str] = {"1.34": "2.0.6", "1.35": "2.1.5", "1.36": "2.2.0", "1.37": "2.2.0"}

_QUANTITY = r"[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?"
_PERCENT = r"[0-9]+(\.[0-9]+)?%"
_EVICTION_SIGNALS = frozenset({
    "memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available",
    "imagefs.inodesFree", "containerfs.available", "containerfs.inodesFree", "pid.available",
})
_RESERVED = frozenset({"cpu", "memory", "ephemeral-storage", "pid"})


def _version3(v: str, what: str, major: str) -> str:
    if not re.fullmatch(rf"v?{major}\.\d+\.\d+", v):
        raise ValueError(f"{v!r} is not a {what} version like {major}.4.3")
    return v.removeprefix("v")


def _sha256(v: str | None) -> str | None:
    if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
        raise ValueError("must be 64 lowercase hex digits")
    return v


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


class ContainerdSpec(Model):
    """containerd and runc from their release binaries (used when `runtime` is `containerd`)."""

    version: str = Field(
        "2.3.7",
        description="containerd release (2.3 is the LTS line), installed from `containerd-<V>-linux-<arch>.tar.gz` "
        "(GitHub or `<mirror>containerd/v<V>/`) into /usr/local. Distro packages are too old "
        "(Debian 12 ships 1.6); Kubernetes 1.36 wants 2.2 or later.",
    )
    sha256: str | None = Field(
        None, description="SHA-256 of the containerd tarball (default: the SHA256SUMS beside it)."
    )
    runc_version: str = Field(
        "1.5.2",
        description="runc release, installed from `runc.<arch>` (GitHub or `<mirror>runc/v<V>/`) "
        "as /usr/local/sbin/runc.",
    )
    runc_sha256: str | None = Field(
        None, description="SHA-256 of the runc binary (default: the SHA256SUMS beside it)."
    )
    restrict_oom_score_adj: bool = Field(
        False,
        description="Never give a container a lower OOM score adjustment than containerd's own "
        "(for hosts that cannot lower OOM scores: user namespaces, containers; kind sets it).",
    )
    snapshotter: Literal["overlayfs", "native", "btrfs"] = Field(
        "overlayfs",
        description="How image layers become root filesystems: `overlayfs`; `native` (plain "
        "copies) where /var/lib/containerd is itself on overlayfs, e.g. inside a container; "
        "`btrfs` on a btrfs /var/lib/containerd.",
    )
    oom_score_adjust: int = Field(
        -999, ge=-1000, le=1000,
        description="OOMScoreAdjust= of containerd's unit (upstream: -999, so the OOM killer "
        "spares the runtime); 0 where the host may not lower scores.",
    )

    @field_validator("version")
    @classmethod
    def _containerd_version(cls, v: str) -> str:
        return _version3(v, "containerd 2.x", "2")

    @field_validator("runc_version")
    @classmethod
    def _runc_version(cls, v: str) -> str:
        return _version3(v, "runc", "1")

    @field_validator("sha256", "runc_sha256")
    @classmethod
    def _shas(cls, v: str | None) -> str | None:
        return _sha256(v)


class KubeletSpec(Model):
    """Kubelet settings shared by every node (KubeletConfiguration)."""

    max_pods: int | None = Field(None, ge=1, le=2500, description="Pods per node (kubelet: 110).")
    eviction_hard: dict[str, str] | None = Field(
        None,
        description="Hard eviction thresholds, e.g. `{memory.available: 100Mi, nodefs.available: "
        "10%}`; list every signal you rely on (a partial map can drop kubelet's other defaults).",
    )
    image_gc_high_threshold_percent: int | None = Field(
        None, ge=0, le=100, alias="imageGCHighThresholdPercent",
        description="Disk usage (%) that starts image garbage collection (85)."
    )
    image_gc_low_threshold_percent: int | None = Field(
        None, ge=0, le=100, alias="imageGCLowThresholdPercent",
        description="Disk usage (%) image garbage collection frees down to (80)."
    )
    system_reserved: dict[str, str] | None = Field(
        None, description="Resources kept for the OS (`cpu`, `memory`, `ephemeral-storage`, `pid`)."
    )
    kube_reserved: dict[str, str] | None = Field(
        None, description="Resources kept for kubelet and the runtime (same keys)."
    )
    resolv_conf: str | None = Field(
        None,
        description="resolv.conf pods inherit; point it past a local stub resolver "
        "(127.0.0.53 makes CoreDNS forward to itself), e.g. /run/systemd/resolve/resolv.conf.",
    )

    @field_validator("resolv_conf")
    @classmethod
    def _resolv(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"/[A-Za-z0-9_./-]*", v):
            raise ValueError(f"{v!r} is not an absolute path")
        return v

    @field_validator("eviction_hard")
    @classmethod
    def _eviction(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v == {}:
            # the kubelet reads an empty map as "unset" and keeps its defaults
            raise ValueError("an empty map does not turn eviction off (kubelet keeps its "
                             "defaults); set thresholds to 0% instead, e.g. {nodefs.available: 0%}")
        for k, q in (v or {}).items():
            if k not in _EVICTION_SIGNALS:
                raise ValueError(f"{k!r} is not an eviction signal ({', '.join(sorted(_EVICTION_SIGNALS))})")
            if not (re.fullmatch(_QUANTITY, str(q)) or re.fullmatch(_PERCENT, str(q))):
                raise ValueError(f"{k}: {q!r} is not a quantity (100Mi) or a percentage (10%)")
        return v

    @field_validator("system_reserved", "kube_reserved")
    @classmethod
    def _reserved(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for k, q in (v or {}).items():
            if k not in _RESERVED:
                raise ValueError(f"{k!r} cannot be reserved ({', '.join(sorted(_RESERVED))})")
            if not re.fullmatch(_QUANTITY, str(q)):
                raise ValueError(f"{k}: {q!r} is not a quantity like 500m or 256Mi")
        return v

    @model_validator(mode="after")
    def _gc(self) -> KubeletSpec:
        hi, lo = self.image_gc_high_threshold_percent, self.image_gc_low_threshold_percent
        if hi is not None and lo is not None and lo > hi:
            raise ValueError(f"imageGCLowThresholdPercent ({lo}) must not exceed the high one ({hi})")
        return self


class KubeProxySpec(Model):
    """kube-proxy settings (KubeProxyConfiguration)."""

    conntrack_max_per_core: int | None = Field(
        None, ge=0, le=2**31 - 1,
        description="nf_conntrack_max per CPU core; 0 leaves the kernel's value alone (needed "
        "where it is read-only, e.g. inside containers). Unset: kube-proxy's 32768.",
    )


class EndpointSpec(Model):
    """An API endpoint that survives the loss of a control plane, run by homekube itself."""

    kind: Literal["vip"] = Field(
        description="`vip`: a virtual IPv4 address that keepalived (VRRP, the distro package, "
        "unicast between the control planes) moves to a control plane whose API server answers.",
    )
    address: ipaddress.IPv4Address = Field(
        description="The virtual address: free (no host uses it) and inside the control planes' "
        "own network, so it can move between them.",
    )
    interface: str | None = Field(
        None,
        description="Interface that carries the address; default: the one holding each control "
        "plane's `address`.",
    )
    router_id: int = Field(
        51, ge=1, le=255,
        description="VRRP virtual router ID; unique among VRRP users on that network.",
    )

    @field_validator("address", mode="before")
    @classmethod
    def _address_as_text(cls, v: object) -> object:
        return _as_text(v)

    @field_validator("interface")
    @classmethod
    def _iface(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}", v):
            raise ValueError(f"{v!r} is not an interface name")
        return v

    @field_validator("address")
    @classmethod
    def _usable(cls, v: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        if v.is_loopback or v.is_unspecified or v.is_multicast or v.is_link_local:
            raise ValueError(f"{v} cannot be a virtual API address")
        return v


class KubernetesSpec(Model):
    """The Kubernetes layer (runtime, kubeadm, CNI, UI). Off means: host prep and etcd only."""

    enabled: bool = Field(
        True,
        description="Install and run the Kubernetes layer. Off: host preparation and etcd only.",
    )
    version: str = Field(
        "1.36",
        description="Kubernetes minor (`1.36`) or patch (`1.36.4`); cri-o follows the minor.",
    )
    control_plane_endpoint: str | None = Field(
        None,
        description="host:port clients use for the API (a DNS name lets you add control planes "
        "later; kubeadm cannot add it after init). Default: first control plane's address:6443.",
    )
    endpoint: EndpointSpec | None = Field(
        None,
        description="A highly available API endpoint homekube runs (`{kind: vip, address: ...}`); "
        "it becomes the controlPlaneEndpoint (`address:6443`), so leave that unset.",
    )
    proxy_mode: Literal["iptables", "nftables"] = Field(
        "nftables", description="kube-proxy mode; ipvs is deprecated since 1.35."
    )
    cert_sans: tuple[str, ...] = Field((), description="Extra SANs for the API server certificate.")
    runtime: Literal["cri-o", "containerd"] = Field(
        "cri-o",
        description="Container runtime: `cri-o` from its per-minor repository, or `containerd` "
        "(+ runc) from the upstream release binaries and CNI plugins from `kubernetes-cni`.",
    )
    cgroup_driver: Literal["systemd", "cgroupfs"] = Field(
        "systemd",
        description="cgroup driver of the kubelet and the runtime (runc `SystemdCgroup`, cri-o "
        "`cgroup_manager`); `cgroupfs` only where systemd does not manage cgroups.",
    )
    allow_cgroup_v1: bool = Field(
        False,
        description="Run on cgroup v1 hosts anyway: kubelet `failCgroupV1: false` and kubeadm "
        "ignores `SystemVerification`. cgroup v1 is deprecated; prefer booting cgroup v2.",
    )
    ignore_preflight_errors: tuple[str, ...] = Field(
        (),
        description="kubeadm preflight checks to ignore on every node, by name (e.g. `Mem`, "
        "`NumCPU`); `all` is refused: it would hide the real problem.",
    )
    containerd: ContainerdSpec = Field(default_factory=ContainerdSpec)
    kubelet: KubeletSpec = Field(default_factory=KubeletSpec)
    kube_proxy: KubeProxySpec = Field(default_factory=KubeProxySpec)

    @field_validator("ignore_preflight_errors")
    @classmethod
    def _checks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if name.lower() == "all":
                raise ValueError("`all` hides every preflight error; name the checks to ignore")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name):
                raise ValueError(f"{name!r} is not a kubeadm preflight check name")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        m = re.fullmatch(r"v?(1\.\d+)(\.\d+)?", v)
        if not m:
            raise ValueError(f"{v!r} is not a Kubernetes version like 1.36 or 1.36.4")
        if m.group(1) not in ETCD_FOR_KUBERNETES:
            supported = ", ".join(SUPPORTED_KUBERNETES)
            raise ValueError(f"Kubernetes {m.group(1)} is not supported (supported: {supported})")
        return v.removeprefix("v")

    @model_validator(mode="after")
    def _one_endpoint(self) -> KubernetesSpec:
        if self.endpoint is not None and self.control_plane_endpoint is not None:
            raise ValueError("set either `endpoint` (homekube runs it) or `controlPlaneEndpoint` "
                             "(you run it), not both")
        return self

    @model_validator(mode="after")
    def _containerd_supports_minor(self) -> KubernetesSpec:
        if self.runtime == "containerd":
            need = CONTAINERD_MIN[self.minor]
            if _vtuple(self.containerd.version) < _vtuple(need):
                raise ValueError(
                    f"containerd {self.containerd.version} is older than Kubernetes {self.minor} "
                    f"supports (containerd {need} or later)")
        return self

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


#: node CIDR size kube-controller-manager hands out per family (its --node-cidr-mask-size
#: defaults; kubeadm sets --allocate-node-cidrs whenever podSubnet is given), which flannel uses
FLANNEL_NODE_PREFIX = {4: 24, 6: 64}


class NetworkSpec(Model):
    """Pod and service networks (single- or dual-stack) and the CNI plugin."""

    pods: tuple[IPNet, ...] = Field(
        (ipaddress.IPv4Network("10.42.0.0/16"),),
        min_length=1,
        max_length=2,
        description="Pod networks: one per family, IPv4 first or IPv6 first (primary family).",
    )
    services: tuple[IPNet, ...] = Field(
        (ipaddress.IPv4Network("10.96.0.0/16"),),
        min_length=1,
        max_length=2,
        description="Service networks, same families and order as `pods`.",
    )
    encapsulation: Literal["VXLAN", "VXLANCrossSubnet", "IPIP", "IPIPCrossSubnet", "None"] = Field(
        "VXLANCrossSubnet",
        description="Calico encapsulation for the IPv4 pool (IPv6 pools always use VXLAN or None).",
    )
    cni: Literal["calico", "flannel"] = Field(
        "calico",
        description="Pod network: `calico` (Tigera operator) or `flannel` (VXLAN; each node gets "
        "a /24 (IPv4) and a /64 (IPv6) of the pod networks).",
    )
    flannel_iface: str | None = Field(
        None,
        description="Interface flannel sends VXLAN over (`--iface`); default: the one with the "
        "default route. For hosts with several networks.",
    )

    @field_validator("flannel_iface")
    @classmethod
    def _iface(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}", v):
            raise ValueError(f"{v!r} is not an interface name")
        return v

    @field_validator("pods", "services", mode="before")
    @classmethod
    def _nets_as_text(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            for item in v:
                _as_text(item)
        return v

    @property
    def dual_stack(self) -> bool:
        return len(self.pods) == 2

    @model_validator(mode="after")
    def _families(self) -> NetworkSpec:
        for field in ("pods", "services"):
            nets: tuple[IPNet, ...] = getattr(self, field)
            if len(nets) == 2 and nets[0].version == nets[1].version:
                raise ValueError(f"{field}: two networks must be one IPv4 and one IPv6")
        pf = [n.version for n in self.pods]
        sf = [n.version for n in self.services]
        if pf != sf:
            raise ValueError(
                f"pods are IPv{'/IPv'.join(map(str, pf))} but services are "
                f"IPv{'/IPv'.join(map(str, sf))}: families and order must match"
            )
        for pod in self.pods:
            block = 26 if pod.version == 4 else 122
            if pod.prefixlen > block:
                raise ValueError(
                    f"pod network {pod} is too small: Calico hands out /{block} blocks, "
                    f"so it must be /{block} or larger"
                )
        if self.cni == "flannel":
            for pod in self.pods:
                node = FLANNEL_NODE_PREFIX[pod.version]
                if not node - 16 <= pod.prefixlen <= node:
                    raise ValueError(
                        f"pod network {pod}: with flannel every node gets a /{node} of it, so it "
                        f"must be between /{node - 16} and /{node} (kube-controller-manager's "
                        "node CIDR allocator)")
        for svc in self.services:
            host_bits = svc.max_prefixlen - svc.prefixlen
            if host_bits > 20:
                raise ValueError(
                    f"service network {svc} is too large: kubeadm allows at most 20 host bits "
                    f"(/{svc.max_prefixlen - 20})"
                )
        return self


class BackupSpec(Model):
    """Scheduled etcd snapshots on every etcd host, with retention."""

    schedule: str | None = Field(
        None, description="systemd OnCalendar= expression (e.g. `daily`); null: no timer."
    )
    keep: int = Field(7, ge=1, description="Snapshots kept on each etcd host.")
    max_bytes: int = Field(
        2 * 1024**3, ge=1, description="Upper bound on the bytes kept in `dir`."
    )
    dir: HostDir = Field("/var/backups/etcd", description="Where timer snapshots are kept.")


class EtcdSpec(Model):
    """etcd as its own TLS systemd service: install source, tuning, certificates."""

    install: Literal["tarball", "package"] = Field(
        "tarball",
        description="`tarball`: upstream release verified by SHA-256 (default); "
        "`package`: the distro package (Debian's etcd-server is 3.4, too old for kubeadm).",
    )
    version: str | None = Field(
        None, description="etcd version; default: the one matched to the Kubernetes minor."
    )
    sha256: str | None = Field(
        None, description="SHA-256 of the release tarball (needed for versions homekube lacks)."
    )
    data_dir: HostDir = Field(DEFAULT_DATA_DIR, description="Data directory (mode 0700, owner etcd).")
    snapshot_count: int = Field(5000, ge=100, le=1_000_000, description="Raft entries between snapshots.")
    heartbeat_ms: int = Field(100, ge=10, le=5000, description="Heartbeat interval (ms).")
    election_ms: int = Field(1000, ge=50, le=50000, description="Election timeout (ms).")
    key_type: Literal["ecdsa-p256", "rsa-2048"] = Field("ecdsa-p256", description="Key algorithm.")
    extra_sans: tuple[str, ...] = Field((), description="Extra names/IPs in server/peer certs.")
    renew_within_days: int = Field(
        30, ge=1, le=300, description="Re-issue certificates expiring within this many days."
    )
    backup: BackupSpec = Field(default_factory=BackupSpec)

    @field_validator("version")
    @classmethod
    def _etcd_version(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"v?3\.\d+\.\d+", v):
            raise ValueError(f"{v!r} is not an etcd version like 3.6.14")
        return v.removeprefix("v") if v else v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @model_validator(mode="after")
    def _timing(self) -> EtcdSpec:
        if self.election_ms < 5 * self.heartbeat_ms:
            raise ValueError(
                f"electionMs ({self.election_ms}) must be at least 5 × heartbeatMs "
                f"({self.heartbeat_ms}); etcd's guidance is 10 ×"
            )
        return self


class UiSpec(Model):
    """The web UI (Headlamp) and its access level."""

    kind: Literal["headlamp", "token", "none"] = Field(
        "headlamp",
        description="Web UI; the Kubernetes Dashboard is archived (2026-01-21). `headlamp` runs "
        "it in the cluster; `token` only creates its service account and binding, for a UI on "
        "your own machine (Headlamp desktop, kubectl) that logs in with `homekube ui` tokens.",
    )
    access: Literal["read-only", "admin"] = Field(
        "read-only", description="`read-only` binds the `view` ClusterRole; `admin` cluster-admin."
    )
    token_hours: int = Field(1, ge=1, le=24, description="Lifetime of tokens from `homekube ui`.")


class HostPrepSpec(Model):
    """Host preparation: swap, firewall, extra sysctls."""

    swap: Literal["off", "allowed"] = Field(
        "off", description="`off`: swapoff and remove from fstab; `allowed`: kubelet NodeSwap."
    )
    firewall: Literal["disable", "open", "leave"] = Field(
        "disable",
        description="firewalld: `disable` (Calico's advice), `open` the ports, or `leave` it.",
    )
    sysctls: dict[str, str] = Field(
        default_factory=dict, description="Extra sysctls to persist and set (key: value; numbers "
        "may be written as numbers)."
    )

    @field_validator("sysctls", mode="before")
    @classmethod
    def _numbers_as_text(cls, v: object) -> object:
        """`net.ipv4.ip_forward: 1` means "1"; a YAML boolean means nothing to the kernel."""
        if not isinstance(v, dict):
            return v
        out: dict[object, object] = {}
        for k, value in v.items():
            if isinstance(value, bool):
                raise ValueError(f"{k}: {value!r} is not a sysctl value (write 1 or 0)")
            out[k] = str(value) if isinstance(value, int | float) else value
        return out

    @field_validator("sysctls")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for k, value in v.items():
            if not re.fullmatch(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+", k):
                raise ValueError(f"{k!r} is not a sysctl key")
            # one line of printable text: a line break would add another line to the sysctl file
            if not value or not value.isprintable():
                raise ValueError(f"{k}: {value!r} is not a sysctl value (one line of printable text)")
        return v


class SshSpec(Model):
    """How homekube logs in (defaults for every host)."""

    user: LoginName = Field("root", description="Login user (root, or a user with sudo).")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    key: str | None = Field("~/.ssh/id_ed25519", description="Private key file.")
    known_hosts: str | None = Field(
        "~/.ssh/known_hosts", description="known_hosts file; host keys are always verified."
    )
    config: str | None = Field(
        "~/.ssh/config", description="OpenSSH client config (Host aliases are honoured)."
    )
    connect_timeout: float = Field(10.0, gt=0, le=120, description="Seconds to wait for a host.")


class HostSshSpec(Model):
    user: LoginName | None = None
    port: int | None = Field(None, ge=1, le=65535)
    key: str | None = None


Role = Literal["control-plane", "etcd", "worker"]


class HostSpec(Model):
    name: Annotated[str, Field(pattern=NAME_RE, description="Node name (DNS label).")]
    address: ipaddress.IPv4Address | ipaddress.IPv6Address = Field(
        description="Address homekube connects to and the node's primary address. A DNS name "
        "is resolved when the config is loaded (certificates and kubeadm get its address; SSH "
        "connects to the name)."
    )
    address6: ipaddress.IPv6Address | None = Field(
        None, description="IPv6 address (needed on every host for dual-stack); may be a DNS name "
        "with an IPv6 address."
    )
    roles: tuple[Role, ...] = Field(min_length=1, description="What runs on the host.")
    ssh: HostSshSpec | None = Field(None, description="Per-host `user`, `port`, `key` overriding `ssh`.")
    ssh_host: str | None = Field(
        None, description="Name or address to SSH to, if not `address` (e.g. a ~/.ssh/config alias)."
    )
    #: the DNS name `address` was written as (the loader resolved it); SSH connects to it
    _dns_name: str | None = PrivateAttr(None)

    def set_dns_name(self, name: str | None) -> None:
        self._dns_name = name

    @property
    def dns_name(self) -> str | None:
        return self._dns_name

    @field_validator("address", "address6", mode="before")
    @classmethod
    def _address_as_text(cls, v: object) -> object:
        return _as_text(v)

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("a role is listed twice")
        return v

    @property
    def ipv4(self) -> ipaddress.IPv4Address | None:
        return self.address if isinstance(self.address, ipaddress.IPv4Address) else None

    @property
    def ipv6(self) -> ipaddress.IPv6Address | None:
        if self.address6 is not None:
            return self.address6
        return self.address if isinstance(self.address, ipaddress.IPv6Address) else None

    def has(self, role: Role) -> bool:
        return role in self.roles


def pem_certificates(text: str) -> str:
    """Check that `text` holds PEM certificates; return it with one trailing newline."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        certs = []
    if not certs:
        raise ValueError("is not a PEM certificate (-----BEGIN CERTIFICATE----- ...)")
    return text.strip() + "\n"


#: `host`, `host:port`, an IPv4 address or a bracketed IPv6 address, with an optional port
_REGISTRY_HOST = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?"
_PATH_PART = r"[a-z0-9]+([._-][a-z0-9]+)*"


class RegistrySpec(Model):
    """How the runtimes reach one registry host (containerd hosts.toml, cri-o registries.conf.d)."""

    host: str = Field(
        description="Registry host as it appears in image names: `registry.home.arpa`, "
        "`192.0.2.250:5000`, `[2001:db8::250]:5000`."
    )
    plain_http: bool = Field(False, description="Speak plain HTTP to it (no TLS at all).")
    ca: str | None = Field(
        None, description="PEM certificate(s) of the CA that signed the registry's certificate."
    )
    ca_file: str | None = Field(
        None,
        description="The same, read from a file on this machine (relative to cluster.yaml).",
    )
    skip_verify: bool = Field(
        False, description="TLS without verifying the certificate (testing only; prefer `ca`)."
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not re.fullmatch(_REGISTRY_HOST, v):
            raise ValueError(f"{v!r} is not a registry host like registry.home.arpa:5000 "
                             "(no scheme, no path)")
        return v

    @field_validator("ca")
    @classmethod
    def _pem(cls, v: str | None) -> str | None:
        return None if v is None else pem_certificates(v)

    @model_validator(mode="after")
    def _one_trust(self) -> RegistrySpec:
        if self.ca is not None and self.ca_file is not None:
            raise ValueError("give the CA either as `ca` or as `caFile`, not both")
        if self.plain_http and (self.ca or self.ca_file or self.skip_verify):
            raise ValueError("plainHttp uses no TLS: ca, caFile and skipVerify do not apply")
        return self

    def ca_pem(self) -> str | None:
        """The CA text; `caFile` is read into `ca` when cluster.yaml is loaded (config.files)."""
        if self.ca_file is not None and self.ca is None:
            raise ValueError(f"registry {self.host}: caFile {self.ca_file} was not read "
                             "(load cluster.yaml with homekube.config.loader)")
        return self.ca

    @property
    def url(self) -> str:
        return ("http://" if self.plain_http else "https://") + self.host


class ArtifactsSpec(Model):
    """Where downloads and container images come from."""

    mirror: str | None = Field(
        None,
        description="Base URL of a local mirror that replaces every upstream download "
        "(etcd, containerd and runc under etcd/, containerd/ and runc/v<V>/ with SHA256SUMS; "
        "package repositories under kubernetes/ and cri-o/; manifests under calico/).",
    )
    image_repository: str | None = Field(
        None,
        description="Registry (and path) every image comes from, e.g. `registry.home.arpa:5000/k8s`: "
        "kubeadm's `imageRepository` (`<repo>/kube-apiserver`, `<repo>/pause`, `<repo>/coredns`); "
        "other images keep their path without the registry host "
        "(`ghcr.io/flannel-io/flannel:v0.28.10` → `<repo>/flannel-io/flannel:v0.28.10`).",
    )
    registries: tuple[RegistrySpec, ...] = Field(
        (), description="Registries that need plain HTTP or a private CA (`artifacts.registries[]` below)."
    )

    @field_validator("image_repository")
    @classmethod
    def _repo(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.rstrip("/")
        host, _, path = v.partition("/")
        if not re.fullmatch(_REGISTRY_HOST, host) or (
            path and not all(re.fullmatch(_PATH_PART, p) for p in path.split("/"))
        ):
            raise ValueError(f"{v!r} is not a registry[:port][/path] like registry.home.arpa:5000/k8s "
                             "(no scheme, no tag; path parts lowercase)")
        return v

    @field_validator("registries")
    @classmethod
    def _unique(cls, v: tuple[RegistrySpec, ...]) -> tuple[RegistrySpec, ...]:
        hosts = [r.host for r in v]
        dup = sorted({h for h in hosts if hosts.count(h) > 1})
        if dup:
            raise ValueError(f"registry {', '.join(dup)} is listed twice")
        return v

    @property
    def image_registry_host(self) -> str | None:
        return self.image_repository.split("/", 1)[0] if self.image_repository else None

    @field_validator("mirror")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.fullmatch(r"(https?|file)://\S+", v):
            raise ValueError("must be an http://, https:// or file:// URL")
        return v if v.endswith("/") else v + "/"


class TimeoutsSpec(Model):
    """Upper bounds, in seconds, for each remote step; a step that runs longer is stopped on
    its host (its whole process tree), and the run ends with an error naming host and step."""

    package: int = Field(900, ge=5, le=86400,
                         description="Package manager steps and downloads (per try; one retry after a "
                         "network error).")
    kubeadm: int = Field(1200, ge=5, le=86400, description="kubeadm init, join, upgrade and reset.")
    wait: int = Field(900, ge=5, le=86400,
                      description="Waits for a service or a Kubernetes object to become ready.")
    default: int = Field(300, ge=5, le=86400, description="Every other step.")


class StateSpec(Model):
    """Operator-side state: the etcd CA, inventory and backups."""

    dir: str = Field(
        "~/.local/state/homekube",
        description="Operator-side state (etcd CA key, backups); kept 0700. "
        "The cluster name is appended.",
    )
    ca_key_on_hosts: bool = Field(
        False, description="Copy the etcd CA key to etcd hosts (off: it never leaves this machine)."
    )


class ClusterConfig(Model):
    """Everything homekube needs to know; the file is the single source of truth."""

    name: Annotated[str, Field(pattern=NAME_RE, description="Cluster name.")]
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    etcd: EtcdSpec = Field(default_factory=EtcdSpec)
    ui: UiSpec = Field(default_factory=UiSpec)
    host_prep: HostPrepSpec = Field(default_factory=HostPrepSpec)
    ssh: SshSpec = Field(default_factory=SshSpec)
    artifacts: ArtifactsSpec = Field(default_factory=ArtifactsSpec)
    state: StateSpec = Field(default_factory=StateSpec)
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    hosts: tuple[HostSpec, ...] = Field(min_length=1, description="The machines (see `hosts[]` below).")

    # --- derived views (pure) -------------------------------------------------------------
    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def etcd_hosts(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.has("etcd"))

    @property
    def control_planes(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.has("control-plane"))

    @property
    def etcd_version(self) -> str:
        return self.etcd.version or ETCD_FOR_KUBERNETES[self.kubernetes.minor]

    @property
    def state_dir(self) -> PurePosixPath:
        return PurePosixPath(self.state.dir) / self.name
