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


class KubernetesSpec(Model):
    """The Kubernetes layer (cri-o, kubeadm, Calico, UI). Off means: host prep and etcd only."""

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
    proxy_mode: Literal["iptables", "nftables"] = Field(
        "nftables", description="kube-proxy mode; ipvs is deprecated since 1.35."
    )
    cert_sans: tuple[str, ...] = Field((), description="Extra SANs for the API server certificate.")

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

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


class NetworkSpec(Model):
    """Pod and service networks (single- or dual-stack) and Calico's encapsulation."""

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
    data_dir: HostDir = Field("/var/lib/etcd", description="Data directory (mode 0700, owner etcd).")
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

    kind: Literal["headlamp", "none"] = Field(
        "headlamp", description="Web UI; the Kubernetes Dashboard is archived (2026-01-21)."
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


class ArtifactsSpec(Model):
    """Where downloads come from."""

    mirror: str | None = Field(
        None,
        description="Base URL of a local mirror that replaces every upstream download "
        "(etcd tarballs under etcd/vX.Y.Z/, manifests under calico/ and headlamp/).",
    )

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
