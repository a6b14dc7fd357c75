"""The ordered list of phases an apply runs; later issues append their phases here."""

from __future__ import annotations

from homekube.components.backup import EtcdBackupPhase
from homekube.components.base import Phase
from homekube.components.etcd import EtcdPhase, EtcdPkiPhase
from homekube.components.hostprep import HostPrepPhase
from homekube.components.k8s_upgrade import KubernetesUpgradePhase
from homekube.components.kubernetes import kubernetes_phases, rendered_kubernetes_files
from homekube.components.removal import DrainPhase, RemovalPhase
from homekube.config.model import ClusterConfig


def all_phases() -> list[Phase]:
    # k8s-upgrade sits before the Kubernetes phases: etcd first, then kubeadm/kubelets move a
    # minor before k8s-packages (which leaves hosts being upgraded to it) and kubeadm look.
    # Removed nodes are drained before etcd loses their members: a drain that a
    # PodDisruptionBudget blocks then stops the apply before anything else changed.
    return [HostPrepPhase(), EtcdPkiPhase(), DrainPhase(), EtcdPhase(), EtcdBackupPhase(),
            KubernetesUpgradePhase(),
            *kubernetes_phases(), RemovalPhase()]


def phase_names() -> list[str]:
    return [p.name for p in all_phases()]


def rendered_files(cfg: ClusterConfig) -> list[tuple[str, str, bytes, bool]]:
    """(host, path, content, secret) for every file homekube writes, without any host."""
    from homekube.components.etcd import bin_dir
    from homekube.components.hostprep import MODULES_FILE, SYSCTL_FILE, modules_file, sysctl_file
    from homekube.etcd.layout import CONFIG_PATH, ENV_FILE, UNIT_PATH
    from homekube.etcd.shell import ETCDCTL_ENV
    from homekube.render import etcd as r
    from homekube.topology import Topology

    out: list[tuple[str, str, bytes, bool]] = []
    members = Topology(cfg).etcd_peers
    for h in cfg.hosts:
        out.append((h.name, MODULES_FILE, modules_file(), False))
        out.append((h.name, SYSCTL_FILE, sysctl_file(cfg), False))
        if h.has("etcd"):
            conf = r.member_config(cfg, h, members=members, state="new")
            out.append((h.name, CONFIG_PATH, r.config_file(conf), False))
            out.append((h.name, UNIT_PATH, r.unit_file(f"{bin_dir(cfg)}/etcd"), False))
            out.append((h.name, ENV_FILE, ETCDCTL_ENV.encode(), False))
    out += rendered_kubernetes_files(cfg)
    return out
