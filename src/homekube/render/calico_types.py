"""Typed models of the Tigera operator's ``operator.tigera.io/v1`` Installation and APIServer.

Fields and enum values follow the Calico 3.32 API reference
(tigera/docs ``calico_versioned_docs/version-3.32/reference/installation/_api.mdx``) and the
operator's ``api/v1/installation_types.go`` (tigera/operator). These are CRDs, so
``kubernetes-validate`` cannot check them; this model is the check. Only the part of
``InstallationSpec`` a home cluster needs is modelled; ``extra="forbid"`` rejects the rest
instead of silently dropping it.

Defaults worth knowing (facts.md §8.2): IPv4 blocks are /26 and IPv6 blocks /122,
``encapsulation`` defaults to IPIP, ``natOutgoing`` to Enabled, ``nodeSelector`` to ``all()``.
IP-in-IP is IPv4-only, so an IPv6 pool with an IPIP mode is rejected here.

Validated, not executed here: no operator was run against these objects.
"""

from __future__ import annotations

import ipaddress
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from homekube.render.kubeadm_types import KubeModel, omitempty

__all__ = [
    "CALICO_API_VERSION",
    "APIServer",
    "APIServerSpec",
    "BGPOption",
    "CalicoNetworkSpec",
    "EncapsulationType",
    "IPPool",
    "Installation",
    "InstallationSpec",
    "LinuxDataplaneOption",
    "NATOutgoingType",
    "NodeAddressAutodetection",
    "ObjectMeta",
]

CALICO_API_VERSION: Final = "operator.tigera.io/v1"

EncapsulationType = Literal["IPIP", "VXLAN", "IPIPCrossSubnet", "VXLANCrossSubnet", "None"]
NATOutgoingType = Literal["Enabled", "Disabled"]
BGPOption = Literal["Enabled", "Disabled"]
LinuxDataplaneOption = Literal["Iptables", "BPF", "VPP", "Nftables"]
EnabledDisabled = Literal["Enabled", "Disabled"]
ClusterRoutingMode = Literal["BIRD", "Felix"]
IPPoolAllowedUse = Literal["Workload", "Tunnel", "LoadBalancer"]
AssignmentMode = Literal["Automatic", "Manual"]
KubernetesAutodetectionMethod = Literal["NodeInternalIP"]


class ObjectMeta(KubeModel):
    """The slice of ``metav1.ObjectMeta`` a cluster-scoped operator resource needs."""

    name: str = Field(alias="name")
    labels: dict[str, str] | None = omitempty("labels")
    annotations: dict[str, str] | None = omitempty("annotations")


class NodeAddressAutodetection(KubeModel):
    """At most one method may be set; none set (``{}``) disables detection for the family."""

    first_found: bool | None = Field(None, alias="firstFound")
    kubernetes: KubernetesAutodetectionMethod | None = Field(None, alias="kubernetes")
    interface: str | None = omitempty("interface")
    skip_interface: str | None = omitempty("skipInterface")
    can_reach: str | None = omitempty("canReach")
    cidrs: list[str] | None = omitempty("cidrs")

    @model_validator(mode="after")
    def _one_method(self) -> NodeAddressAutodetection:
        chosen = [
            name
            for name in ("first_found", "kubernetes", "interface", "skip_interface", "can_reach")
            if getattr(self, name) not in (None, "")
        ] + (["cidrs"] if self.cidrs else [])
        if len(chosen) > 1:
            raise ValueError(f"at most one autodetection method may be set, got {chosen}")
        return self


class IPPool(KubeModel):
    name: str | None = omitempty("name")
    cidr: str = Field(alias="cidr")
    encapsulation: EncapsulationType | None = omitempty("encapsulation")
    nat_outgoing: NATOutgoingType | None = omitempty("natOutgoing")
    node_selector: str | None = omitempty("nodeSelector")
    block_size: int | None = Field(None, alias="blockSize")
    disable_bgp_export: bool | None = Field(None, alias="disableBGPExport")
    disable_new_allocations: bool | None = omitempty("disableNewAllocations")
    allowed_uses: list[IPPoolAllowedUse] | None = omitempty("allowedUses")
    assignment_mode: AssignmentMode | None = omitempty("assignmentMode")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        ipaddress.ip_network(v, strict=True)
        return v

    @model_validator(mode="after")
    def _family_rules(self) -> IPPool:
        net = ipaddress.ip_network(self.cidr)
        if net.version == 6 and self.encapsulation in ("IPIP", "IPIPCrossSubnet"):
            raise ValueError(f"{self.cidr}: IP-in-IP is IPv4-only; use VXLAN or None")
        if self.block_size is not None and not (
            net.prefixlen <= self.block_size <= net.max_prefixlen
        ):
            raise ValueError(
                f"blockSize {self.block_size} must lie between the pool prefix /{net.prefixlen}"
                f" and /{net.max_prefixlen}"
            )
        return self


class Sysctl(KubeModel):
    key: str = Field(alias="key")
    value: str = Field(alias="value")


class CalicoNetworkSpec(KubeModel):
    linux_dataplane: LinuxDataplaneOption | None = Field(None, alias="linuxDataplane")
    bpf_network_bootstrap: EnabledDisabled | None = Field(None, alias="bpfNetworkBootstrap")
    kube_proxy_management: EnabledDisabled | None = Field(None, alias="kubeProxyManagement")
    bgp: BGPOption | None = Field(None, alias="bgp")
    cluster_routing_mode: ClusterRoutingMode | None = Field(None, alias="clusterRoutingMode")
    ip_pools: list[IPPool] | None = Field(
        None,
        alias="ipPools",
        description="nil: the operator creates one IPv4 pool; []: it creates none.",
    )
    mtu: int | None = Field(None, alias="mtu", ge=0)
    node_address_autodetection_v4: NodeAddressAutodetection | None = Field(
        None, alias="nodeAddressAutodetectionV4"
    )
    node_address_autodetection_v6: NodeAddressAutodetection | None = Field(
        None, alias="nodeAddressAutodetectionV6"
    )
    host_ports: EnabledDisabled | None = Field(None, alias="hostPorts")
    multi_interface_mode: Literal["None", "Multus"] | None = Field(None, alias="multiInterfaceMode")
    container_ip_forwarding: EnabledDisabled | None = Field(None, alias="containerIPForwarding")
    sysctl: list[Sysctl] | None = omitempty("sysctl")
    linux_policy_setup_timeout_seconds: int | None = Field(
        None, alias="linuxPolicySetupTimeoutSeconds", ge=0
    )

    @model_validator(mode="after")
    def _pools(self) -> CalicoNetworkSpec:
        """At most one pool per address family (installation_types.go, IPPools comment)."""
        families = [ipaddress.ip_network(p.cidr).version for p in self.ip_pools or []]
        if len(families) != len(set(families)):
            raise ValueError("calicoNetwork.ipPools: at most one pool per address family")
        return self


class CNIIPAMSpec(KubeModel):
    type: Literal["Calico", "HostLocal", "AmazonVPC", "AzureVNET"] = Field(alias="type")


class CNISpec(KubeModel):
    type: Literal["Calico", "GKE", "AmazonVPC", "AzureVNET"] = Field(alias="type")
    ipam: CNIIPAMSpec | None = Field(None, alias="ipam")
    bin_dir: str | None = omitempty("binDir")
    conf_dir: str | None = omitempty("confDir")


class InstallationSpec(KubeModel):
    variant: Literal["Calico", "TigeraSecureEnterprise"] | None = omitempty("variant")
    registry: str | None = omitempty("registry")
    image_path: str | None = omitempty("imagePath")
    image_prefix: str | None = omitempty("imagePrefix")
    kubernetes_provider: str | None = omitempty("kubernetesProvider")
    cni: CNISpec | None = Field(None, alias="cni")
    calico_network: CalicoNetworkSpec | None = Field(None, alias="calicoNetwork")
    control_plane_node_selector: dict[str, str] | None = omitempty("controlPlaneNodeSelector")
    control_plane_replicas: int | None = Field(None, alias="controlPlaneReplicas", ge=1)
    node_metrics_port: int | None = Field(None, alias="nodeMetricsPort")
    typha_metrics_port: int | None = Field(None, alias="typhaMetricsPort")
    flex_volume_path: str | None = omitempty("flexVolumePath")
    kubelet_volume_plugin_path: str | None = omitempty("kubeletVolumePluginPath")
    service_cidrs: list[str] | None = omitempty("serviceCIDRs")

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        """The operator concatenates ``<registry><imagePath>/``: it must end with a slash."""
        if v and v != "UseDefault" and not v.endswith("/"):
            raise ValueError(f"registry {v!r} must end with '/' (or be UseDefault)")
        return v


class Installation(KubeModel):
    """The single ``Installation``; the operator only honours one named ``default``."""

    api_version: Literal["operator.tigera.io/v1"] = Field(CALICO_API_VERSION, alias="apiVersion")
    kind: Literal["Installation"] = Field("Installation", alias="kind")
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta(name="default"))
    spec: InstallationSpec = Field(default_factory=InstallationSpec, alias="spec")

    @field_validator("metadata")
    @classmethod
    def _name(cls, v: ObjectMeta) -> ObjectMeta:
        if v.name != "default":
            raise ValueError('the Installation must be named "default"')
        return v


class APIServerSpec(KubeModel):
    """Kept empty by homekube: the Calico API server with its defaults (facts.md §8.3)."""

    logging: dict[str, object] | None = Field(None, alias="logging")
    api_server_deployment: dict[str, object] | None = Field(None, alias="apiServerDeployment")
    calico_webhooks_deployment: dict[str, object] | None = Field(
        None, alias="calicoWebhooksDeployment"
    )


class APIServer(KubeModel):
    api_version: Literal["operator.tigera.io/v1"] = Field(CALICO_API_VERSION, alias="apiVersion")
    kind: Literal["APIServer"] = Field("APIServer", alias="kind")
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta(name="default"))
    spec: APIServerSpec = Field(default_factory=APIServerSpec, alias="spec")

    @field_validator("metadata")
    @classmethod
    def _name(cls, v: ObjectMeta) -> ObjectMeta:
        if v.name not in ("default", "tigera-secure"):
            raise ValueError('the APIServer must be named "default" (or "tigera-secure")')
        return v
