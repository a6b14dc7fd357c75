"""Flannel (``network.cni: flannel``) as Kubernetes objects — pure, built-in kinds only.

Made general from upstream's ``kube-flannel.yml`` (flannel-io/flannel, v0.28.x release
manifest): namespace ``kube-flannel`` with the Pod Security ``privileged`` level, the
``flannel`` ServiceAccount and ClusterRole (read pods and nodes, patch node status), the
``kube-flannel-cfg`` ConfigMap, and the ``kube-flannel-ds`` DaemonSet whose init containers copy
the ``flannel`` CNI plugin into ``/opt/cni/bin`` and the conflist into ``/etc/cni/net.d`` before
``flanneld --ip-masq --kube-subnet-mgr`` runs on the host network with NET_ADMIN/NET_RAW.

What is cluster-specific: ``net-conf.json`` carries the pod networks (``Network`` for IPv4,
``IPv6Network`` + ``EnableIPv6`` for IPv6; ``EnableIPv4: false`` when there is no IPv4 pod
network), always with the VXLAN backend; the images follow `artifacts.imageRepository`. Each
node's subnet is its ``spec.podCIDR(s)``, allocated by kube-controller-manager, which kubeadm
starts with ``--allocate-node-cidrs=true --cluster-cidr=<podSubnet>`` whenever podSubnet is
set (kubeadm ``phases/controlplane/manifests.go``).

Every object is checked by ``kubernetes-validate`` (strict) in the tests. Validated, not
executed here.
"""

from __future__ import annotations

import json
from typing import Any

from homekube.config.model import ClusterConfig
from homekube.render.images import image

__all__ = [
    "FLANNEL_CNI_PLUGIN_IMAGE",
    "FLANNEL_DAEMONSET",
    "FLANNEL_IMAGE",
    "FLANNEL_NAMESPACE",
    "FLANNEL_VERSION",
    "flannel_net_conf",
    "flannel_objects",
]

FLANNEL_VERSION = "v0.28.10"
FLANNEL_IMAGE = f"ghcr.io/flannel-io/flannel:{FLANNEL_VERSION}"
FLANNEL_CNI_PLUGIN_IMAGE = "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"
"""The CNI plugin image of flannel's v0.28.9 manifest; that v0.28.10 ships the same tag is
UNCONFIRMED (no v0.28.10 manifest could be read)."""

FLANNEL_NAMESPACE = "kube-flannel"
FLANNEL_DAEMONSET = "kube-flannel-ds"

_APP = {"app": "flannel", "k8s-app": "flannel"}
_LABELS = {**_APP, "tier": "node", "app.kubernetes.io/managed-by": "homekube"}


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(_LABELS)
    return meta


def flannel_net_conf(cfg: ClusterConfig) -> dict[str, Any]:
    """``net-conf.json``: the pod networks per family and the VXLAN backend."""
    v4 = [n for n in cfg.network.pods if n.version == 4]
    v6 = [n for n in cfg.network.pods if n.version == 6]
    conf: dict[str, Any] = {}
    if v4:
        conf["Network"] = str(v4[0])
    else:
        conf["EnableIPv4"] = False
    if v6:
        conf["EnableIPv6"] = True
        conf["IPv6Network"] = str(v6[0])
    conf["EnableNFTables"] = False
    conf["Backend"] = {"Type": "vxlan"}
    return conf


_CNI_CONF = {
    "name": "cbr0",
    "cniVersion": "0.3.1",
    "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def flannel_objects(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """Render flannel in apply order: Namespace, ServiceAccount, RBAC, ConfigMap, DaemonSet."""
    ns = FLANNEL_NAMESPACE
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns,
                     "labels": {**_LABELS, "pod-security.kubernetes.io/enforce": "privileged"}},
    }
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("flannel", ns)}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _meta("flannel"),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta("flannel"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "flannel"},
        "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": ns}],
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("kube-flannel-cfg", ns),
        "data": {"cni-conf.json": _json(_CNI_CONF), "net-conf.json": _json(flannel_net_conf(cfg))},
    }
    flannel = image(cfg, FLANNEL_IMAGE)
    iface = cfg.network.flannel_iface
    field_ref = {"fieldPath": "metadata.name"}
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(FLANNEL_DAEMONSET, ns),
        "spec": {
            "selector": {"matchLabels": dict(_APP)},
            "template": {
                "metadata": {"labels": dict(_LABELS)},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                        ]}],
                    }}},
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}],
                    "serviceAccountName": "flannel",
                    "initContainers": [
                        {
                            "name": "install-cni-plugin",
                            "image": image(cfg, FLANNEL_CNI_PLUGIN_IMAGE),
                            "command": ["cp"],
                            "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                            "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}],
                        },
                        {
                            "name": "install-cni",
                            "image": flannel,
                            "command": ["cp"],
                            "args": ["-f", "/etc/kube-flannel/cni-conf.json",
                                     "/etc/cni/net.d/10-flannel.conflist"],
                            "volumeMounts": [
                                {"name": "cni", "mountPath": "/etc/cni/net.d"},
                                {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                            ],
                        },
                    ],
                    "containers": [{
                        "name": "kube-flannel",
                        "image": flannel,
                        "command": ["/opt/bin/flanneld"],
                        "args": ["--ip-masq", "--kube-subnet-mgr",
                                 *([f"--iface={iface}"] if iface else [])],
                        "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
                        "securityContext": {
                            "privileged": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
                        },
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": field_ref}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {
                                **field_ref, "fieldPath": "metadata.namespace"}}},
                            {"name": "EVENT_QUEUE_DEPTH", "value": "5000"},
                            {"name": "CONT_WHEN_CACHE_NOT_READY", "value": "false"},
                        ],
                        "volumeMounts": [
                            {"name": "run", "mountPath": "/run/flannel"},
                            {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                        ],
                    }],
                    "volumes": [
                        {"name": "run", "hostPath": {"path": "/run/flannel"}},
                        {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin"}},
                        {"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
                        {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}},
                        {"name": "xtables-lock",
                         "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                    ],
                },
            },
        },
    }
    return [namespace, service_account, role, binding, config_map, daemonset]
