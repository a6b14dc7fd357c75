"""The typed models against the upstream definitions they claim to follow.

The tables below were transcribed from the upstream Go sources (read through the search tool):

* kubernetes/kubernetes ``cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go``
  (commit 1329935739c3aa007d23cb9a4dadfee9d59ff79b) and
  ``cmd/kubeadm/app/apis/bootstraptoken/v1/types.go``;
* kubernetes/kubernetes ``staging/src/k8s.io/kubelet/config/v1beta1/types.go``
  (commit 001332b0422071acf4860769f18e34b5e9b7c1bc);
* kubernetes/kubernetes ``staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go``
  (commit 052d2d84f95e90aa94868b51a48b1ae7a1c91152);
* tigera/docs ``calico_versioned_docs/version-3.32/reference/installation/_api.mdx``.

Each kubeadm field is classified by its JSON tag: ``omitempty`` (a value type tagged
omitempty: the zero value is not written), ``pointer`` (a Go pointer: only nil is omitted, so
``false`` is a real value), ``plain`` (no omitempty: Go always writes it — ``taints``!) or
``meta`` (TypeMeta). The models must agree field by field.
"""

from __future__ import annotations

import typing
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML

from homekube.render import calico_types as calico
from homekube.render import kubeadm_types as kt

# --------------------------------------------------------------------------------------------
# upstream tables (transcribed, see module docstring)
# --------------------------------------------------------------------------------------------

OMIT, PTR, PLAIN, META = "omitempty", "pointer", "plain", "meta"

KUBEADM_V1BETA4: dict[type[BaseModel], dict[str, str]] = {
    kt.InitConfiguration: {
        "apiVersion": META,
        "kind": META,
        "bootstrapTokens": OMIT,
        "dryRun": OMIT,
        "nodeRegistration": OMIT,
        "localAPIEndpoint": OMIT,
        "certificateKey": OMIT,
        "skipPhases": OMIT,
        "patches": PTR,
        "timeouts": PTR,
    },
    kt.ClusterConfiguration: {
        "apiVersion": META,
        "kind": META,
        "etcd": OMIT,
        "networking": OMIT,
        "kubernetesVersion": OMIT,
        "controlPlaneEndpoint": OMIT,
        "apiServer": OMIT,
        "controllerManager": OMIT,
        "scheduler": OMIT,
        "dns": OMIT,
        "proxy": OMIT,
        "certificatesDir": OMIT,
        "imageRepository": OMIT,
        "featureGates": OMIT,
        "clusterName": OMIT,
        "encryptionAlgorithm": OMIT,
        "certificateValidityPeriod": PTR,
        "caCertificateValidityPeriod": PTR,
    },
    kt.ControlPlaneComponent: {"extraArgs": OMIT, "extraVolumes": OMIT, "extraEnvs": OMIT},
    kt.APIServer: {"extraArgs": OMIT, "extraVolumes": OMIT, "extraEnvs": OMIT, "certSANs": OMIT},
    kt.DNSAddon: {"imageRepository": OMIT, "imageTag": OMIT, "disabled": OMIT},
    kt.ProxyAddon: {"disabled": OMIT},
    kt.APIEndpoint: {"advertiseAddress": OMIT, "bindPort": OMIT},
    kt.NodeRegistrationOptions: {
        "name": OMIT,
        "criSocket": OMIT,
        "taints": PLAIN,
        "kubeletExtraArgs": OMIT,
        "ignorePreflightErrors": OMIT,
        "imagePullPolicy": OMIT,
        "imagePullSerial": PTR,
    },
    kt.Networking: {"serviceSubnet": OMIT, "podSubnet": OMIT, "dnsDomain": OMIT},
    kt.Etcd: {"local": PTR, "external": PTR},
    kt.LocalEtcd: {
        "imageRepository": OMIT,
        "imageTag": OMIT,
        "dataDir": PLAIN,
        "extraArgs": OMIT,
        "extraEnvs": OMIT,
        "serverCertSANs": OMIT,
        "peerCertSANs": OMIT,
    },
    # httpEndpoints (kubeadm >= 1.35) is not in the types.go copy read; facts.md §7.1 names it
    kt.ExternalEtcd: {
        "endpoints": PLAIN,
        "caFile": PLAIN,
        "certFile": PLAIN,
        "keyFile": PLAIN,
        "httpEndpoints": OMIT,
    },
    kt.JoinConfiguration: {
        "apiVersion": META,
        "kind": META,
        "dryRun": OMIT,
        "nodeRegistration": OMIT,
        "caCertPath": OMIT,
        "discovery": PLAIN,
        "controlPlane": PTR,
        "skipPhases": OMIT,
        "patches": PTR,
        "timeouts": PTR,
    },
    kt.JoinControlPlane: {"localAPIEndpoint": OMIT, "certificateKey": OMIT},
    kt.Discovery: {"bootstrapToken": PTR, "file": PTR, "tlsBootstrapToken": OMIT},
    kt.BootstrapTokenDiscovery: {
        "token": PLAIN,
        "apiServerEndpoint": OMIT,
        "caCertHashes": OMIT,
        "unsafeSkipCAVerification": OMIT,
    },
    kt.FileDiscovery: {"kubeConfigPath": PLAIN},
    kt.HostPathMount: {
        "name": PLAIN,
        "hostPath": PLAIN,
        "mountPath": PLAIN,
        "readOnly": OMIT,
        "pathType": OMIT,
    },
    kt.Patches: {"directory": OMIT},
    kt.Arg: {"name": PLAIN, "value": PLAIN},
    kt.EnvVar: {"name": PLAIN, "value": OMIT, "valueFrom": PTR},
    kt.Taint: {"key": PLAIN, "value": OMIT, "effect": PLAIN, "timeAdded": PTR},
    kt.Timeouts: {
        "controlPlaneComponentHealthCheck": PTR,
        "kubeletHealthCheck": PTR,
        "kubernetesAPICall": PTR,
        "etcdAPICall": PTR,
        "tlsBootstrap": PTR,
        "discovery": PTR,
        "upgradeManifests": PTR,
    },
    kt.BootstrapToken: {
        "token": PTR,
        "description": OMIT,
        "ttl": PTR,
        "expires": PTR,
        "usages": OMIT,
        "groups": OMIT,
    },
}

# every JSON name of KubeletConfiguration in the types.go read (the model is a subset)
KUBELET_V1BETA1_NAMES = {
    "apiVersion", "kind", "enableServer", "staticPodPath", "podLogsDir", "syncFrequency",
    "fileCheckFrequency", "httpCheckFrequency", "staticPodURL", "staticPodURLHeader", "address",
    "port", "readOnlyPort", "tlsCertFile", "tlsPrivateKeyFile", "tlsCipherSuites",
    "tlsCurvePreferences", "tlsMinVersion", "rotateCertificates", "serverTLSBootstrap",
    "authentication", "authorization", "registryPullQPS", "registryBurst",
    "imagePullCredentialsVerificationPolicy", "preloadedImagesVerificationAllowlist",
    "eventRecordQPS", "eventBurst", "enableDebuggingHandlers", "enableContentionProfiling",
    "healthzPort", "healthzBindAddress", "oomScoreAdj", "clusterDomain", "clusterDNS",
    "streamingConnectionIdleTimeout", "nodeStatusUpdateFrequency", "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds", "imageMinimumGCAge", "imageMaximumGCAge",
    "imageGCHighThresholdPercent", "imageGCLowThresholdPercent", "volumeStatsAggPeriod",
    "kubeletCgroups", "systemCgroups", "cgroupRoot", "cgroupsPerQOS", "cgroupDriver",
    "cpuManagerPolicy", "singleProcessOOMKill", "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod", "draManagerReconcilePeriod", "memoryManagerPolicy",
    "topologyManagerPolicy", "topologyManagerScope", "topologyManagerPolicyOptions",
    "qosReserved", "runtimeRequestTimeout", "hairpinMode", "maxPods", "podCIDR", "podPidsLimit",
    "resolvConf", "runOnce", "cpuCFSQuota", "cpuCFSQuotaPeriod", "nodeStatusMaxImages",
    "maxOpenFiles", "contentType", "kubeAPIQPS", "kubeAPIBurst", "serializeImagePulls",
    "maxParallelImagePulls", "evictionHard", "evictionSoft", "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod", "evictionMaxPodGracePeriod", "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings", "podsPerCore", "enableControllerAttachDetach",
    "protectKernelDefaults", "makeIPTablesUtilChains", "iptablesMasqueradeBit",
    "iptablesDropBit", "featureGates", "failSwapOn", "memorySwap", "containerLogMaxSize",
    "containerLogMaxFiles", "containerLogMaxWorkers", "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy", "systemReserved", "kubeReserved",
    "reservedSystemCPUs", "showHiddenMetricsForVersion", "systemReservedCgroup",
    "kubeReservedCgroup", "enforceNodeAllocatable", "allowedUnsafeSysctls", "volumePluginDir",
    "providerID", "kernelMemcgNotification", "logging", "enableSystemLogHandler",
    "enableSystemLogQuery", "shutdownGracePeriod", "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority", "crashLoopBackOff", "reservedMemory",
    "enableProfilingHandler", "enableDebugFlagsHandler", "seccompDefault",
    "memoryThrottlingFactor", "memoryReservationPolicy", "registerWithTaints", "registerNode",
    "tracing", "localStorageCapacityIsolation", "containerRuntimeEndpoint",
    "imageServiceEndpoint", "failCgroupV1", "userNamespaces",
}  # fmt: skip

# the tag kinds of the kubelet fields the model does carry
KUBELET_SUBSET_KINDS = {
    "apiVersion": META,
    "kind": META,
    "staticPodPath": OMIT,
    "address": OMIT,
    "port": OMIT,
    "readOnlyPort": OMIT,
    "tlsCipherSuites": OMIT,
    "tlsMinVersion": OMIT,
    "rotateCertificates": OMIT,
    "serverTLSBootstrap": OMIT,
    "healthzPort": PTR,
    "healthzBindAddress": OMIT,
    "clusterDomain": OMIT,
    "clusterDNS": OMIT,
    "cgroupDriver": OMIT,
    "imageGCHighThresholdPercent": PTR,
    "imageGCLowThresholdPercent": PTR,
    "maxPods": OMIT,
    "podPidsLimit": PTR,
    "resolvConf": PTR,
    "serializeImagePulls": PTR,
    "maxParallelImagePulls": PTR,
    "evictionHard": OMIT,
    "featureGates": OMIT,
    "failSwapOn": PTR,
    "memorySwap": OMIT,
    "containerLogMaxSize": OMIT,
    "containerLogMaxFiles": PTR,
    "systemReserved": OMIT,
    "kubeReserved": OMIT,
    "shutdownGracePeriod": OMIT,
    "shutdownGracePeriodCriticalPods": OMIT,
    "seccompDefault": PTR,
    "singleProcessOOMKill": PTR,
    "registerWithTaints": OMIT,
    "registerNode": PTR,
    "containerRuntimeEndpoint": PLAIN,
    "imageServiceEndpoint": OMIT,
    "failCgroupV1": PTR,
}

KUBE_PROXY_V1ALPHA1_NAMES = {
    "apiVersion", "kind", "featureGates", "clientConnection", "logging", "hostnameOverride",
    "bindAddress", "healthzBindAddress", "metricsBindAddress", "bindAddressHardFail",
    "enableProfiling", "showHiddenMetricsForVersion", "mode", "iptables", "ipvs", "nftables",
    "winkernel", "detectLocalMode", "detectLocal", "clusterCIDR", "nodePortAddresses",
    "oomScoreAdj", "conntrack", "configSyncPeriod", "portRange", "windowsRunAsService",
}  # fmt: skip
KUBE_PROXY_IPTABLES_NAMES = {
    "masqueradeBit", "masqueradeAll", "localhostNodePorts", "snatNodeInternalIP", "syncPeriod",
    "minSyncPeriod",
}  # fmt: skip
KUBE_PROXY_NFTABLES_NAMES = {"masqueradeBit", "masqueradeAll", "syncPeriod", "minSyncPeriod"}
# KubeProxyConntrackConfiguration: every name upstream (the model carries maxPerCore and min)
KUBE_PROXY_CONNTRACK_NAMES = {
    "maxPerCore", "min", "tcpEstablishedTimeout", "tcpCloseWaitTimeout", "tcpBeLiberal",
    "udpTimeout", "udpStreamTimeout",
}  # fmt: skip

CALICO_IPPOOL_NAMES = {
    "name", "cidr", "encapsulation", "natOutgoing", "nodeSelector", "blockSize",
    "disableBGPExport", "disableNewAllocations", "allowedUses", "assignmentMode",
}  # fmt: skip
CALICO_AUTODETECTION_NAMES = {
    "firstFound", "kubernetes", "interface", "skipInterface", "canReach", "cidrs",
}  # fmt: skip
CALICO_NETWORK_NAMES = {
    "linuxDataplane", "windowsDataplane", "bpfNetworkBootstrap", "kubeProxyManagement", "bgp",
    "clusterRoutingMode", "ipPools", "mtu", "nodeAddressAutodetectionV4",
    "nodeAddressAutodetectionV6", "hostPorts", "multiInterfaceMode", "containerIPForwarding",
    "sysctl", "linuxPolicySetupTimeoutSeconds",
}  # fmt: skip
CALICO_INSTALLATION_SPEC_NAMES = {
    "variant", "registry", "imagePath", "imagePrefix", "imagePullSecrets", "kubernetesProvider",
    "cni", "calicoNetwork", "typhaAffinity", "controlPlaneNodeSelector",
    "controlPlaneTolerations", "controlPlaneReplicas", "nodeMetricsPort", "typhaMetricsPort",
    "flexVolumePath", "kubeletVolumePluginPath", "nodeUpdateStrategy", "componentResources",
    "certificateManagement", "tlsCipherSuites", "nonPrivileged", "calicoNodeDaemonSet",
    "csiNodeDriverDaemonSet", "calicoKubeControllersDeployment", "typhaDeployment",
    "calicoWindowsUpgradeDaemonSet", "calicoNodeWindowsDaemonSet", "fipsMode", "logging",
    "windowsNodes", "serviceCIDRs", "azure", "proxy",
}  # fmt: skip


def _aliases(model: type[BaseModel]) -> dict[str, str]:
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _literal_values(annotation: Any) -> set[Any]:
    """All Literal values inside an annotation such as ``Literal[...] | None``."""
    out: set[Any] = set()
    if typing.get_origin(annotation) is typing.Literal:
        return set(get_args(annotation))
    for arg in get_args(annotation):
        out |= _literal_values(arg)
    return out


# --------------------------------------------------------------------------------------------
# field names and presence rules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(KUBEADM_V1BETA4), ids=lambda m: m.__name__)
def test_kubeadm_field_names_match_upstream(model: type[BaseModel]) -> None:
    assert set(_aliases(model)) == set(KUBEADM_V1BETA4[model])


@pytest.mark.parametrize("model", list(KUBEADM_V1BETA4), ids=lambda m: m.__name__)
def test_kubeadm_omitempty_matches_go_tags(model: type[BaseModel]) -> None:
    for alias, name in _aliases(model).items():
        kind = KUBEADM_V1BETA4[model][alias]
        assert kt.is_omitempty(model, name) == (kind == OMIT), f"{model.__name__}.{alias} is {kind}"


def test_kubelet_fields_are_upstream_names_with_upstream_tags() -> None:
    aliases = _aliases(kt.KubeletConfiguration)
    assert set(aliases) <= KUBELET_V1BETA1_NAMES
    assert set(aliases) == set(KUBELET_SUBSET_KINDS)
    for alias, name in aliases.items():
        expected = KUBELET_SUBSET_KINDS[alias] == OMIT
        assert kt.is_omitempty(kt.KubeletConfiguration, name) == expected, alias
    assert set(_aliases(kt.MemorySwapConfiguration)) == {"swapBehavior"}


def test_kube_proxy_fields_are_upstream_names() -> None:
    assert set(_aliases(kt.KubeProxyConfiguration)) <= KUBE_PROXY_V1ALPHA1_NAMES
    assert set(_aliases(kt.KubeProxyIPTablesConfiguration)) == KUBE_PROXY_IPTABLES_NAMES
    assert set(_aliases(kt.KubeProxyNFTablesConfiguration)) == KUBE_PROXY_NFTABLES_NAMES
    assert set(_aliases(kt.KubeProxyConntrackConfiguration)) <= KUBE_PROXY_CONNTRACK_NAMES


def test_calico_fields_are_upstream_names() -> None:
    assert set(_aliases(calico.IPPool)) == CALICO_IPPOOL_NAMES
    assert set(_aliases(calico.NodeAddressAutodetection)) == CALICO_AUTODETECTION_NAMES
    assert set(_aliases(calico.CalicoNetworkSpec)) <= CALICO_NETWORK_NAMES
    assert set(_aliases(calico.InstallationSpec)) <= CALICO_INSTALLATION_SPEC_NAMES


# --------------------------------------------------------------------------------------------
# enums
# --------------------------------------------------------------------------------------------


def test_enum_values_match_upstream() -> None:
    # EncryptionAlgorithmType constants; ECDSA-P384 is the 1.34 addition (facts.md §6.1)
    assert set(get_args(kt.EncryptionAlgorithm)) == {
        "ECDSA-P256", "ECDSA-P384", "RSA-2048", "RSA-3072", "RSA-4096",
    }  # fmt: skip
    assert set(get_args(kt.SwapBehavior)) == {"", "NoSwap", "LimitedSwap"}
    assert set(get_args(kt.ProxyMode)) == {"", "iptables", "nftables", "ipvs"}
    assert _literal_values(kt.Taint.model_fields["effect"].annotation) == {
        "NoSchedule", "PreferNoSchedule", "NoExecute",
    }  # fmt: skip
    pull = kt.NodeRegistrationOptions.model_fields["image_pull_policy"].annotation
    assert _literal_values(pull) == {"Always", "IfNotPresent", "Never"}
    assert set(get_args(calico.EncapsulationType)) == {
        "IPIP", "VXLAN", "IPIPCrossSubnet", "VXLANCrossSubnet", "None",
    }  # fmt: skip
    assert set(get_args(calico.NATOutgoingType)) == {"Enabled", "Disabled"}
    assert set(get_args(calico.BGPOption)) == {"Enabled", "Disabled"}
    assert set(get_args(calico.LinuxDataplaneOption)) == {"Iptables", "BPF", "VPP", "Nftables"}
    auto = calico.NodeAddressAutodetection.model_fields["kubernetes"].annotation
    assert _literal_values(auto) == {"NodeInternalIP"}


def test_api_versions_and_kinds() -> None:
    assert kt.InitConfiguration().to_dict() == {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "InitConfiguration",
    }
    assert kt.KubeletConfiguration().to_dict()["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert kt.KubeProxyConfiguration().to_dict()["apiVersion"] == (
        "kubeproxy.config.k8s.io/v1alpha1"
    )
    with pytest.raises(ValidationError):  # v1beta3 is gone since 1.36 (facts.md §7.1)
        kt.InitConfiguration.model_validate({"apiVersion": "kubeadm.k8s.io/v1beta3"})


# --------------------------------------------------------------------------------------------
# required fields and validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (kt.ExternalEtcd, {}),  # endpoints: "Required for ExternalEtcd"
        (kt.ExternalEtcd, {"endpoints": []}),
        (kt.JoinConfiguration, {}),  # discovery has no omitempty and no default
        (kt.BootstrapTokenDiscovery, {}),
        (kt.Arg, {"name": "v"}),
        (kt.Taint, {"key": "k"}),
        (kt.FileDiscovery, {}),
        (calico.IPPool, {"name": "p"}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_required_fields(model: type[BaseModel], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (kt.ClusterConfiguration, {"encryptionAlgorithm": "ECDSA-P521"}),
        (kt.ClusterConfiguration, {"kubernetesVersion": "1.36"}),  # neither release nor label
        (kt.ClusterConfiguration, {"bogus": 1}),
        (kt.NodeRegistrationOptions, {"kubeletExtraArgs": {"node-ip": "192.0.2.10"}}),  # v1beta3
        (kt.Etcd, {"local": {}, "external": {"endpoints": ["https://192.0.2.10:2379"]}}),
        (kt.ExternalEtcd, {"endpoints": ["https://2001:db8::1:2379"]}),  # IPv6 unbracketed
        (kt.Networking, {"podSubnet": "10.42.0.0/16,10.43.0.0/16"}),
        (kt.APIEndpoint, {"advertiseAddress": "node1.home.arpa"}),
        (kt.BootstrapTokenDiscovery, {"token": "not-a-token"}),
        (kt.BootstrapTokenDiscovery, {"token": "abcdef.0123456789abcdef", "caCertHashes": ["x"]}),
        (kt.KubeletConfiguration, {"memorySwap": {"swapBehavior": "LimitedSwap"}}),
        (kt.KubeletConfiguration, {"shutdownGracePeriod": "30 seconds"}),
        (kt.KubeProxyConfiguration, {"mode": "userspace"}),
        (calico.IPPool, {"cidr": "fd42::/56", "encapsulation": "IPIP"}),
        (calico.IPPool, {"cidr": "10.42.0.0/16", "blockSize": 8}),
        (calico.IPPool, {"cidr": "10.42.0.0/16", "natOutgoing": True}),  # an enum, not a bool
        (calico.NodeAddressAutodetection, {"firstFound": True, "kubernetes": "NodeInternalIP"}),
        (calico.Installation, {"metadata": {"name": "mine"}}),
        (
            calico.CalicoNetworkSpec,
            {"ipPools": [{"cidr": "10.42.0.0/16"}, {"cidr": "10.43.0.0/16"}]},
        ),
    ],
)
def test_invalid_values_are_rejected(model: type[BaseModel], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


@pytest.mark.parametrize(
    "version",
    ["v1.36.4", "1.37.0", "stable-1.36", "stable-1", "stable", "latest-1.37", "ci/latest"],
)
def test_kubernetes_version_accepts_kubeadm_forms(version: str) -> None:
    """The release and label forms ``kubeadm/app/util/version.go`` understands."""
    cc = kt.ClusterConfiguration(kubernetes_version=version)
    assert cc.to_dict()["kubernetesVersion"] == version


# --------------------------------------------------------------------------------------------
# presence on output (Go's omitempty vs pointer vs plain)
# --------------------------------------------------------------------------------------------


def test_explicit_empty_taints_survive_and_nil_taints_do_not() -> None:
    assert kt.NodeRegistrationOptions(taints=[]).to_dict() == {"taints": []}
    assert kt.NodeRegistrationOptions().to_dict() == {}


def test_pointer_false_survives_and_omitempty_zero_does_not() -> None:
    kubelet = kt.KubeletConfiguration(fail_swap_on=False, rotate_certificates=False, max_pods=0)
    out = kubelet.to_dict()
    assert out["failSwapOn"] is False
    assert "rotateCertificates" not in out
    assert "maxPods" not in out
    init = kt.InitConfiguration(dry_run=False, local_api_endpoint=kt.APIEndpoint(bind_port=0))
    assert init.to_dict() == {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration"}


def test_calico_empty_autodetection_is_written_as_empty_object() -> None:
    """``{}`` disables detection for a family (facts.md §8.2), so it must not vanish."""
    net = calico.CalicoNetworkSpec(node_address_autodetection_v4=calico.NodeAddressAutodetection())
    assert net.to_dict() == {"nodeAddressAutodetectionV4": {}}
    assert calico.APIServer().to_dict()["spec"] == {}


# --------------------------------------------------------------------------------------------
# facts.md's composed examples load and round-trip
# --------------------------------------------------------------------------------------------

FACTS_7_3 = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 192.0.2.10
  bindPort: 6443
nodeRegistration:
  name: node1
  criSocket: unix:///var/run/crio/crio.sock
  taints: []                     # single node: keep it schedulable
  kubeletExtraArgs:
  - name: node-ip
    value: 192.0.2.10,2001:db8:10::10
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.36.4       # match the installed kubeadm minor
controlPlaneEndpoint: k8s.home.arpa:6443   # DNS name → lets you go HA later
networking:
  podSubnet: 10.42.0.0/16,fd42:42::/56
  serviceSubnet: 10.96.0.0/16,fd42:96::/112
etcd:
  external:
    endpoints:
    - https://192.0.2.10:2379
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
apiServer:
  certSANs: ["k8s.home.arpa", "192.0.2.10", "2001:db8:10::10"]
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd            # informational: ignored when CRI-O reports its driver
"""

FACTS_1_4 = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failSwapOn: false
memorySwap:
  swapBehavior: LimitedSwap
"""

FACTS_6_2 = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: 192.0.2.10
nodeRegistration:
  name: node1
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
etcd:
  local:
    serverCertSANs: ["192.0.2.10", "2001:db8:10::10", "node1.home.arpa"]
    peerCertSANs:   ["192.0.2.10", "2001:db8:10::10", "node1.home.arpa"]
"""

FACTS_7_3A = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
"""

FACTS_8_3 = """\
apiVersion: operator.tigera.io/v1
kind: Installation
metadata:
  name: default
spec:
  calicoNetwork:
    nodeAddressAutodetectionV4:
      kubernetes: NodeInternalIP
    nodeAddressAutodetectionV6:
      kubernetes: NodeInternalIP
    ipPools:
    - name: default-ipv4-ippool
      cidr: 10.42.0.0/16
      blockSize: 26
      encapsulation: VXLANCrossSubnet
      natOutgoing: Enabled
      nodeSelector: all()
    - name: default-ipv6-ippool
      cidr: fd42:42::/56
      blockSize: 122
      encapsulation: VXLAN
      natOutgoing: Enabled
      nodeSelector: all()
---
apiVersion: operator.tigera.io/v1
kind: APIServer
metadata:
  name: default
spec: {}
"""

MODELS_BY_KIND: dict[str, type[kt.KubeModel]] = {
    "InitConfiguration": kt.InitConfiguration,
    "ClusterConfiguration": kt.ClusterConfiguration,
    "JoinConfiguration": kt.JoinConfiguration,
    "KubeletConfiguration": kt.KubeletConfiguration,
    "KubeProxyConfiguration": kt.KubeProxyConfiguration,
    "Installation": calico.Installation,
    "APIServer": calico.APIServer,
}


def _load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in YAML(typ="safe", pure=True).load_all(text) if doc is not None]


@pytest.mark.parametrize(
    "text",
    [FACTS_7_3, FACTS_1_4, FACTS_6_2, FACTS_7_3A, FACTS_8_3],
    ids=["7.3", "1.4", "6.2", "7.3a", "8.3"],
)
def test_facts_examples_round_trip(text: str) -> None:
    docs = _load_all(text)
    assert docs
    for doc in docs:
        model = MODELS_BY_KIND[doc["kind"]].model_validate(doc)
        assert model.to_dict() == doc


def test_facts_7_3_keeps_taints_empty_list() -> None:
    init = kt.InitConfiguration.model_validate(_load_all(FACTS_7_3)[0])
    assert init.node_registration is not None
    assert init.node_registration.taints == []
    assert init.to_dict()["nodeRegistration"]["taints"] == []
