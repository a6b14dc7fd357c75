"""Typed models of the kubeadm v1beta4, kubelet v1beta1 and kube-proxy v1alpha1 config files.

Field names, optionality and enum values follow the upstream Go types (read from
kubernetes/kubernetes ``cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go``,
``cmd/kubeadm/app/apis/bootstraptoken/v1/types.go``,
``staging/src/k8s.io/kubelet/config/v1beta1/types.go`` and
``staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go``); ``tests/render/test_kubeadm_types.py``
holds the upstream field lists and checks these models against them.

Presence on output follows Go's ``encoding/json`` (see :class:`KubeModel`): ``None`` is "nil"
and never written; fields Go tags ``omitempty`` on value types drop their zero value; every
other field is written when set. That is what keeps ``nodeRegistration.taints: []`` (no taint)
distinct from a missing ``taints`` (kubeadm adds the control-plane taint) — facts.md §7.1.

The kubeadm types are complete for the kinds we render. ``KubeletConfiguration`` and
``KubeProxyConfiguration`` are *subsets* (the fields homekube sets or a home cluster plausibly
needs); because ``extra="forbid"``, a field outside the subset is rejected rather than silently
dropped — add it here, with the type from upstream, when it is needed.

Validated, not executed here: no kubeadm binary could be run against these files.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = [
    "KUBEADM_API_VERSION",
    "KUBELET_API_VERSION",
    "KUBE_PROXY_API_VERSION",
    "OMITEMPTY_KEY",
    "APIEndpoint",
    "APIServer",
    "Arg",
    "BootstrapToken",
    "BootstrapTokenDiscovery",
    "ClusterConfiguration",
    "ControlPlaneComponent",
    "DNSAddon",
    "Discovery",
    "Duration",
    "EncryptionAlgorithm",
    "EnvVar",
    "Etcd",
    "ExternalEtcd",
    "FileDiscovery",
    "HostPathMount",
    "InitConfiguration",
    "JoinConfiguration",
    "JoinControlPlane",
    "KubeModel",
    "KubeProxyConfiguration",
    "KubeProxyConntrackConfiguration",
    "KubeProxyIPTablesConfiguration",
    "KubeProxyNFTablesConfiguration",
    "KubeletConfiguration",
    "LocalEtcd",
    "MemorySwapConfiguration",
    "Networking",
    "NodeRegistrationOptions",
    "Patches",
    "ProxyAddon",
    "ProxyMode",
    "SwapBehavior",
    "Taint",
    "Timeouts",
    "is_omitempty",
    "omitempty",
]

KUBEADM_API_VERSION: Final = "kubeadm.k8s.io/v1beta4"
KUBELET_API_VERSION: Final = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API_VERSION: Final = "kubeproxy.config.k8s.io/v1alpha1"

# --------------------------------------------------------------------------------------------
# Go-like presence
# --------------------------------------------------------------------------------------------

OMITEMPTY_KEY = "homekube_omitempty"


def omitempty(alias: str, default: Any = None, **kwargs: Any) -> Any:
    """Declare a field Go tags ``omitempty`` on a value type: its zero value is not written.

    Use it only for value types (``string``, ``int32``, ``bool``, slices, maps, structs). Go
    pointer fields (``*bool``, ``*Timeouts``) keep a plain ``Field``: their zero value is a
    real setting (``failSwapOn: false``) and only nil is omitted.
    """
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[OMITEMPTY_KEY] = True
    return Field(default, alias=alias, json_schema_extra=extra, **kwargs)


def is_omitempty(model: type[BaseModel], name: str) -> bool:
    """Say whether field ``name`` of ``model`` was declared with :func:`omitempty`."""
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(OMITEMPTY_KEY))


def _is_zero(value: Any) -> bool:
    if isinstance(value, bool):
        return value is False
    if isinstance(value, int | float):
        return value == 0
    return isinstance(value, str | list | dict) and len(value) == 0


class KubeModel(BaseModel):
    """Strict model of an upstream type: unknown keys rejected, camelCase names on the wire."""

    model_config = ConfigDict(
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    @model_serializer(mode="wrap")
    def _go_presence(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        cls = type(self)
        for name, field in cls.model_fields.items():
            for key in (field.alias, name):
                if key is None or key not in data:
                    continue
                value = data[key]
                if value is None or (is_omitempty(cls, name) and _is_zero(value)):
                    del data[key]
                break
        return data

    def to_dict(self) -> dict[str, Any]:
        """Return the wire form: camelCase keys, Go field presence, JSON-compatible values."""
        out = self.model_dump(mode="json", by_alias=True)
        if not isinstance(out, dict):  # pragma: no cover - every model dumps to a mapping
            raise TypeError(f"{type(self).__name__} did not serialise to a mapping")
        return out


# --------------------------------------------------------------------------------------------
# Shared scalar types
# --------------------------------------------------------------------------------------------

_DURATION_UNIT = r"(\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
Duration = Annotated[str, StringConstraints(pattern=rf"^(0|-?({_DURATION_UNIT})+)$")]
"""A ``metav1.Duration``: Go's ``time.ParseDuration`` syntax, e.g. ``4m0s`` or ``24h``."""

EncryptionAlgorithm = Literal["ECDSA-P256", "ECDSA-P384", "RSA-2048", "RSA-3072", "RSA-4096"]
"""``EncryptionAlgorithmType``; ``ECDSA-P384`` since kubeadm 1.34 (facts.md §6.1)."""

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
HostPathType = Literal[
    "", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
    "BlockDevice",
]  # fmt: skip

_TOKEN_RE = r"^[a-z0-9]{6}\.[a-z0-9]{16}$"  # noqa: S105 - a pattern, not a secret
_CA_HASH_RE = r"^sha256:[0-9a-f]{64}$"
_CERT_KEY_RE = r"^[0-9a-f]{64}$"  # hex of a 32-byte AES key (CertificateKeySize = 32)

# kubeadm/app/util/version.go: kubeReleaseRegex, kubeReleaseLabelRegex, kubeBucketPrefixes
_K8S_RELEASE = r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-0-9a-zA-Z_\.+]*)?"
_K8S_LABEL = r"((latest|stable)+(-[1-9](\.[1-9]([0-9])?)?)?)"
_K8S_VERSION_RE = re.compile(rf"((release|ci|ci-cross)/)?({_K8S_RELEASE}|{_K8S_LABEL})")


# --------------------------------------------------------------------------------------------
# core/v1 pieces kubeadm embeds
# --------------------------------------------------------------------------------------------


class Taint(KubeModel):
    """``corev1.Taint``."""

    key: str = Field(min_length=1, alias="key")
    value: str | None = omitempty("value")
    effect: TaintEffect = Field(alias="effect")
    time_added: str | None = Field(None, alias="timeAdded")


class EnvVar(KubeModel):
    """``corev1.EnvVar`` (``valueFrom`` kept opaque: we never set it)."""

    name: str = Field(min_length=1, alias="name")
    value: str | None = omitempty("value")
    value_from: dict[str, Any] | None = Field(None, alias="valueFrom")


# --------------------------------------------------------------------------------------------
# kubeadm.k8s.io/v1beta4
# --------------------------------------------------------------------------------------------


class Arg(KubeModel):
    """One ``{name, value}`` flag; v1beta4 replaced the v1beta3 maps with lists of these."""

    name: str = Field(min_length=1, alias="name")
    value: str = Field(alias="value")


class HostPathMount(KubeModel):
    name: str = Field(alias="name")
    host_path: str = Field(alias="hostPath")
    mount_path: str = Field(alias="mountPath")
    read_only: bool | None = omitempty("readOnly")
    path_type: HostPathType | None = omitempty("pathType")


class Patches(KubeModel):
    directory: str | None = omitempty("directory")


class Timeouts(KubeModel):
    """Every member is a ``*metav1.Duration``; kubeadm's defaults are 4m/4m/1m/2m/5m/5m/5m."""

    control_plane_component_health_check: Duration | None = Field(
        None, alias="controlPlaneComponentHealthCheck"
    )
    kubelet_health_check: Duration | None = Field(None, alias="kubeletHealthCheck")
    kubernetes_api_call: Duration | None = Field(None, alias="kubernetesAPICall")
    etcd_api_call: Duration | None = Field(None, alias="etcdAPICall")
    tls_bootstrap: Duration | None = Field(None, alias="tlsBootstrap")
    discovery: Duration | None = Field(None, alias="discovery")
    upgrade_manifests: Duration | None = Field(None, alias="upgradeManifests")


class BootstrapToken(KubeModel):
    """``bootstraptoken/v1.BootstrapToken``; ``token`` has no omitempty upstream."""

    token: Annotated[str, StringConstraints(pattern=_TOKEN_RE)] | None = Field(None, alias="token")
    description: str | None = omitempty("description")
    ttl: Duration | None = Field(None, alias="ttl")
    expires: str | None = Field(None, alias="expires")
    usages: list[str] | None = omitempty("usages")
    groups: list[str] | None = omitempty("groups")


class APIEndpoint(KubeModel):
    advertise_address: str | None = omitempty("advertiseAddress")
    bind_port: int | None = omitempty("bindPort", ge=0, le=65535)

    @field_validator("advertise_address")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v:
            ipaddress.ip_address(v)  # raises ValueError: kubeadm wants an IP, not a name
        return v


class NodeRegistrationOptions(KubeModel):
    name: str | None = omitempty("name")
    cri_socket: str | None = omitempty("criSocket")
    taints: list[Taint] | None = Field(
        None,
        alias="taints",
        description="No omitempty upstream: nil = kubeadm adds the control-plane taint; "
        "[] = no taint.",
    )
    kubelet_extra_args: list[Arg] | None = omitempty("kubeletExtraArgs")
    ignore_preflight_errors: list[str] | None = omitempty("ignorePreflightErrors")
    image_pull_policy: PullPolicy | None = omitempty("imagePullPolicy")
    image_pull_serial: bool | None = Field(None, alias="imagePullSerial")


class InitConfiguration(KubeModel):
    api_version: Literal["kubeadm.k8s.io/v1beta4"] = Field(KUBEADM_API_VERSION, alias="apiVersion")
    kind: Literal["InitConfiguration"] = Field("InitConfiguration", alias="kind")
    bootstrap_tokens: list[BootstrapToken] | None = omitempty("bootstrapTokens")
    dry_run: bool | None = omitempty("dryRun")
    node_registration: NodeRegistrationOptions | None = omitempty("nodeRegistration")
    local_api_endpoint: APIEndpoint | None = omitempty("localAPIEndpoint")
    certificate_key: Annotated[str, StringConstraints(pattern=_CERT_KEY_RE)] | None = omitempty(
        "certificateKey"
    )
    skip_phases: list[str] | None = omitempty("skipPhases")
    patches: Patches | None = Field(None, alias="patches")
    timeouts: Timeouts | None = Field(None, alias="timeouts")


class ControlPlaneComponent(KubeModel):
    extra_args: list[Arg] | None = omitempty("extraArgs")
    extra_volumes: list[HostPathMount] | None = omitempty("extraVolumes")
    extra_envs: list[EnvVar] | None = omitempty("extraEnvs")


class APIServer(ControlPlaneComponent):
    cert_sans: list[str] | None = omitempty("certSANs")


class DNSAddon(KubeModel):
    """``v1beta4.DNS`` (renamed here so it does not read like a hostname type)."""

    image_repository: str | None = omitempty("imageRepository")
    image_tag: str | None = omitempty("imageTag")
    disabled: bool | None = omitempty("disabled")


class ProxyAddon(KubeModel):
    """``v1beta4.Proxy``: the kube-proxy add-on switch."""

    disabled: bool | None = omitempty("disabled")


class Networking(KubeModel):
    service_subnet: str | None = omitempty("serviceSubnet")
    pod_subnet: str | None = omitempty("podSubnet")
    dns_domain: str | None = omitempty("dnsDomain")

    @field_validator("service_subnet", "pod_subnet")
    @classmethod
    def _cidrs(cls, v: str | None) -> str | None:
        """One CIDR, or an IPv4 and an IPv6 CIDR joined by a comma (facts.md §7.2)."""
        if not v:
            return v
        nets = [ipaddress.ip_network(part.strip(), strict=True) for part in v.split(",")]
        if len(nets) > 2 or (len(nets) == 2 and nets[0].version == nets[1].version):
            raise ValueError(f"{v!r}: expected one CIDR or one IPv4 and one IPv6 CIDR")
        return v


class LocalEtcd(KubeModel):
    image_repository: str | None = omitempty("imageRepository")
    image_tag: str | None = omitempty("imageTag")
    data_dir: str | None = Field(None, alias="dataDir")
    extra_args: list[Arg] | None = omitempty("extraArgs")
    extra_envs: list[EnvVar] | None = omitempty("extraEnvs")
    server_cert_sans: list[str] | None = omitempty("serverCertSANs")
    peer_cert_sans: list[str] | None = omitempty("peerCertSANs")


class ExternalEtcd(KubeModel):
    """``endpoints`` is required upstream; the three files are required for TLS (§6.3)."""

    endpoints: list[str] = Field(min_length=1, alias="endpoints")
    ca_file: str | None = Field(None, alias="caFile")
    cert_file: str | None = Field(None, alias="certFile")
    key_file: str | None = Field(None, alias="keyFile")
    http_endpoints: list[str] | None = omitempty(
        "httpEndpoints",
        description="kubeadm >= 1.35 (facts.md §7.1). UNCONFIRMED against types.go: the copy "
        "read predates it. homekube never sets it.",
    )

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.fullmatch(r"https?://(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):\d+", url):
                raise ValueError(f"{url!r} is not scheme://host:port (bracket IPv6 literals)")
        return v


class Etcd(KubeModel):
    local: LocalEtcd | None = Field(None, alias="local")
    external: ExternalEtcd | None = Field(None, alias="external")

    @model_validator(mode="after")
    def _exclusive(self) -> Etcd:
        if self.local is not None and self.external is not None:
            raise ValueError("etcd.local and etcd.external are mutually exclusive")
        return self


class ClusterConfiguration(KubeModel):
    api_version: Literal["kubeadm.k8s.io/v1beta4"] = Field(KUBEADM_API_VERSION, alias="apiVersion")
    kind: Literal["ClusterConfiguration"] = Field("ClusterConfiguration", alias="kind")
    etcd: Etcd | None = omitempty("etcd")
    networking: Networking | None = omitempty("networking")
    kubernetes_version: str | None = omitempty("kubernetesVersion")
    control_plane_endpoint: str | None = omitempty("controlPlaneEndpoint")
    api_server: APIServer | None = omitempty("apiServer")
    controller_manager: ControlPlaneComponent | None = omitempty("controllerManager")
    scheduler: ControlPlaneComponent | None = omitempty("scheduler")
    dns: DNSAddon | None = omitempty("dns")
    proxy: ProxyAddon | None = omitempty("proxy")
    certificates_dir: str | None = omitempty("certificatesDir")
    image_repository: str | None = omitempty("imageRepository")
    feature_gates: dict[str, bool] | None = omitempty("featureGates")
    cluster_name: str | None = omitempty("clusterName")
    encryption_algorithm: EncryptionAlgorithm | None = omitempty("encryptionAlgorithm")
    certificate_validity_period: Duration | None = Field(None, alias="certificateValidityPeriod")
    ca_certificate_validity_period: Duration | None = Field(
        None, alias="caCertificateValidityPeriod"
    )

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        """A release (``v1.36.4``) or a label (``stable-1.36``), as kubeadm's version.go parses."""
        if v and not _K8S_VERSION_RE.fullmatch(v):
            raise ValueError(f"{v!r} is neither a Kubernetes release nor a label like stable-1.36")
        return v


class BootstrapTokenDiscovery(KubeModel):
    token: Annotated[str, StringConstraints(pattern=_TOKEN_RE)] = Field(alias="token")
    api_server_endpoint: str | None = omitempty("apiServerEndpoint")
    ca_cert_hashes: list[Annotated[str, StringConstraints(pattern=_CA_HASH_RE)]] | None = omitempty(
        "caCertHashes"
    )
    unsafe_skip_ca_verification: bool | None = omitempty("unsafeSkipCAVerification")


class FileDiscovery(KubeModel):
    kube_config_path: str = Field(alias="kubeConfigPath")


class Discovery(KubeModel):
    bootstrap_token: BootstrapTokenDiscovery | None = Field(None, alias="bootstrapToken")
    file: FileDiscovery | None = Field(None, alias="file")
    tls_bootstrap_token: str | None = omitempty("tlsBootstrapToken")

    @model_validator(mode="after")
    def _exclusive(self) -> Discovery:
        if self.bootstrap_token is not None and self.file is not None:
            raise ValueError("discovery.bootstrapToken and discovery.file are mutually exclusive")
        return self


class JoinControlPlane(KubeModel):
    local_api_endpoint: APIEndpoint | None = omitempty("localAPIEndpoint")
    certificate_key: Annotated[str, StringConstraints(pattern=_CERT_KEY_RE)] | None = omitempty(
        "certificateKey"
    )


class JoinConfiguration(KubeModel):
    api_version: Literal["kubeadm.k8s.io/v1beta4"] = Field(KUBEADM_API_VERSION, alias="apiVersion")
    kind: Literal["JoinConfiguration"] = Field("JoinConfiguration", alias="kind")
    dry_run: bool | None = omitempty("dryRun")
    node_registration: NodeRegistrationOptions | None = omitempty("nodeRegistration")
    ca_cert_path: str | None = omitempty("caCertPath")
    discovery: Discovery = Field(alias="discovery")
    control_plane: JoinControlPlane | None = Field(None, alias="controlPlane")
    skip_phases: list[str] | None = omitempty("skipPhases")
    patches: Patches | None = Field(None, alias="patches")
    timeouts: Timeouts | None = Field(None, alias="timeouts")


# --------------------------------------------------------------------------------------------
# kubelet.config.k8s.io/v1beta1 (subset)
# --------------------------------------------------------------------------------------------

SwapBehavior = Literal["", "NoSwap", "LimitedSwap"]
"""``memorySwap.swapBehavior``; ``LimitedSwap`` needs cgroup v2 (facts.md §1.4)."""


class MemorySwapConfiguration(KubeModel):
    swap_behavior: SwapBehavior | None = omitempty("swapBehavior")


class KubeletConfiguration(KubeModel):
    """The kubelet settings homekube sets, plus common ones. A subset: see the module doc."""

    api_version: Literal["kubelet.config.k8s.io/v1beta1"] = Field(
        KUBELET_API_VERSION, alias="apiVersion"
    )
    kind: Literal["KubeletConfiguration"] = Field("KubeletConfiguration", alias="kind")
    static_pod_path: str | None = omitempty("staticPodPath")
    address: str | None = omitempty("address")
    port: int | None = omitempty("port", ge=0, le=65535)
    read_only_port: int | None = omitempty("readOnlyPort", ge=0, le=65535)
    tls_cipher_suites: list[str] | None = omitempty("tlsCipherSuites")
    tls_min_version: str | None = omitempty("tlsMinVersion")
    rotate_certificates: bool | None = omitempty("rotateCertificates")
    server_tls_bootstrap: bool | None = omitempty("serverTLSBootstrap")
    healthz_port: int | None = Field(None, alias="healthzPort", ge=0, le=65535)
    healthz_bind_address: str | None = omitempty("healthzBindAddress")
    cluster_domain: str | None = omitempty("clusterDomain")
    cluster_dns: list[str] | None = omitempty("clusterDNS")
    cgroup_driver: Literal["systemd", "cgroupfs"] | None = omitempty("cgroupDriver")
    image_gc_high_threshold_percent: int | None = Field(
        None, alias="imageGCHighThresholdPercent", ge=0, le=100
    )
    image_gc_low_threshold_percent: int | None = Field(
        None, alias="imageGCLowThresholdPercent", ge=0, le=100
    )
    max_pods: int | None = omitempty("maxPods", ge=0)
    pod_pids_limit: int | None = Field(None, alias="podPidsLimit")
    resolv_conf: str | None = Field(None, alias="resolvConf")
    serialize_image_pulls: bool | None = Field(None, alias="serializeImagePulls")
    max_parallel_image_pulls: int | None = Field(None, alias="maxParallelImagePulls", ge=1)
    eviction_hard: dict[str, str] | None = omitempty("evictionHard")
    feature_gates: dict[str, bool] | None = omitempty("featureGates")
    fail_swap_on: bool | None = Field(
        None, alias="failSwapOn", description="*bool upstream: false is a setting, kept."
    )
    memory_swap: MemorySwapConfiguration | None = omitempty("memorySwap")
    container_log_max_size: str | None = omitempty("containerLogMaxSize")
    container_log_max_files: int | None = Field(None, alias="containerLogMaxFiles", ge=2)
    system_reserved: dict[str, str] | None = omitempty("systemReserved")
    kube_reserved: dict[str, str] | None = omitempty("kubeReserved")
    shutdown_grace_period: Duration | None = omitempty("shutdownGracePeriod")
    shutdown_grace_period_critical_pods: Duration | None = omitempty(
        "shutdownGracePeriodCriticalPods"
    )
    seccomp_default: bool | None = Field(None, alias="seccompDefault")
    single_process_oom_kill: bool | None = Field(None, alias="singleProcessOOMKill")
    register_with_taints: list[Taint] | None = omitempty("registerWithTaints")
    register_node: bool | None = Field(None, alias="registerNode")
    container_runtime_endpoint: str | None = Field(None, alias="containerRuntimeEndpoint")
    image_service_endpoint: str | None = omitempty("imageServiceEndpoint")
    fail_cgroup_v1: bool | None = Field(
        None, alias="failCgroupV1", description="Default true since 1.35 (KEP-5573, §1.3)."
    )

    @model_validator(mode="after")
    def _swap(self) -> KubeletConfiguration:
        behaviour = self.memory_swap.swap_behavior if self.memory_swap else None
        if behaviour == "LimitedSwap" and self.fail_swap_on is not False:
            raise ValueError("memorySwap.swapBehavior LimitedSwap needs failSwapOn: false")
        return self


# --------------------------------------------------------------------------------------------
# kubeproxy.config.k8s.io/v1alpha1 (subset)
# --------------------------------------------------------------------------------------------

ProxyMode = Literal["", "iptables", "nftables", "ipvs"]
"""Linux proxy modes; ``""`` means the default (iptables). ipvs is deprecated since 1.35."""


class KubeProxyIPTablesConfiguration(KubeModel):
    masquerade_bit: int | None = Field(None, alias="masqueradeBit", ge=0, le=31)
    masquerade_all: bool | None = Field(None, alias="masqueradeAll")
    localhost_node_ports: bool | None = Field(None, alias="localhostNodePorts")
    snat_node_internal_ip: bool | None = Field(None, alias="snatNodeInternalIP")
    sync_period: Duration | None = Field(None, alias="syncPeriod")
    min_sync_period: Duration | None = Field(None, alias="minSyncPeriod")


class KubeProxyNFTablesConfiguration(KubeModel):
    masquerade_bit: int | None = Field(None, alias="masqueradeBit", ge=0, le=31)
    masquerade_all: bool | None = Field(None, alias="masqueradeAll")
    sync_period: Duration | None = Field(None, alias="syncPeriod")
    min_sync_period: Duration | None = Field(None, alias="minSyncPeriod")


class KubeProxyConntrackConfiguration(KubeModel):
    """``conntrack``: ``maxPerCore: 0`` leaves the kernel's nf_conntrack_max alone."""

    max_per_core: int | None = Field(None, alias="maxPerCore", ge=0)
    min: int | None = Field(None, alias="min", ge=0)


class KubeProxyConfiguration(KubeModel):
    """The kube-proxy settings homekube may set. A subset: see the module doc."""

    api_version: Literal["kubeproxy.config.k8s.io/v1alpha1"] = Field(
        KUBE_PROXY_API_VERSION, alias="apiVersion"
    )
    kind: Literal["KubeProxyConfiguration"] = Field("KubeProxyConfiguration", alias="kind")
    feature_gates: dict[str, bool] | None = omitempty("featureGates")
    hostname_override: str | None = Field(None, alias="hostnameOverride")
    bind_address: str | None = Field(None, alias="bindAddress")
    healthz_bind_address: str | None = Field(None, alias="healthzBindAddress")
    metrics_bind_address: str | None = Field(None, alias="metricsBindAddress")
    mode: ProxyMode | None = Field(None, alias="mode")
    iptables: KubeProxyIPTablesConfiguration | None = Field(None, alias="iptables")
    nftables: KubeProxyNFTablesConfiguration | None = Field(None, alias="nftables")
    detect_local_mode: (
        Literal["", "ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"] | None
    ) = Field(None, alias="detectLocalMode")
    cluster_cidr: str | None = Field(None, alias="clusterCIDR")
    node_port_addresses: list[str] | None = Field(None, alias="nodePortAddresses")
    oom_score_adj: int | None = Field(None, alias="oomScoreAdj", ge=-1000, le=1000)
    conntrack: KubeProxyConntrackConfiguration | None = Field(None, alias="conntrack")
    config_sync_period: Duration | None = Field(None, alias="configSyncPeriod")
