"""A commented starter cluster.yaml for `homekube init`."""

from __future__ import annotations

import ipaddress
import re

from homekube.config.model import NAME_RE


def _address(a: str) -> str:
    """An IP address (normalised) or a DNS name; ValueError with a clear message otherwise."""
    try:
        return str(ipaddress.ip_address(a.strip()))
    except ValueError:
        pass
    from homekube.config.loader import _is_dns_name

    if re.fullmatch(r"[\d.]+|.*:.*", a.strip()) or not _is_dns_name(a.strip()):
        raise ValueError(f"--host {a!r} is neither an IP address nor a DNS name")
    return a.strip().rstrip(".")


def _node_name(a: str, i: int) -> str:
    """The host's first DNS label when it makes a valid node name, else node<i>."""
    label = a.split(".")[0].lower()
    return label if not label.isdigit() and re.fullmatch(NAME_RE, label) and ":" not in a else f"node{i}"


def starter(name: str, hosts: list[str]) -> str:
    """The starter text; raises ValueError for a --host that is no address or name."""
    if not re.fullmatch(NAME_RE, name):
        raise ValueError(f"--name {name!r} must be a lowercase DNS label (a-z, 0-9 and '-')")
    addrs = [_address(a) for a in hosts] or ["192.0.2.10"]
    host_lines = []
    names: set[str] = set()
    for i, a in enumerate(addrs, start=1):
        node = _node_name(a, i) if hosts else "node1"
        if node in names:
            node = f"node{i}"
        names.add(node)
        roles = "[control-plane, etcd, worker]" if i == 1 else "[worker]"
        host_lines.append(f'  - {{name: {node}, address: "{a}", roles: {roles}}}')
    return f"""\
# homekube cluster.yaml: the whole cluster in one file. `homekube schema` prints its JSON Schema.
name: {name}
kubernetes:
  enabled: true
  version: "1.36"                 # cri-o follows this minor; etcd 3.6.14 is matched to it
  # A DNS name here lets you add control planes later (kubeadm cannot add one after init).
  # controlPlaneEndpoint: k8s.home.arpa:6443
  proxyMode: nftables
  runtime: cri-o                  # or containerd (release binaries; CNI plugins from kubernetes-cni)
network:
  # One network per family; add an IPv6 network to each for dual-stack (then every host
  # needs address6).
  pods: [10.42.0.0/16]
  services: [10.96.0.0/16]
  encapsulation: VXLANCrossSubnet  # Calico's; `cni: flannel` uses VXLAN always
  cni: calico
etcd:
  install: tarball                # upstream release, checked by SHA-256
  snapshotCount: 5000
  heartbeatMs: 100                # LAN defaults; electionMs must be >= 5 x heartbeatMs
  electionMs: 1000
  backup: {{schedule: daily, keep: 7}}
ui: {{kind: headlamp, access: read-only}}
hostPrep: {{swap: "off", firewall: disable}}
ssh: {{user: root, key: ~/.ssh/id_ed25519, knownHosts: ~/.ssh/known_hosts}}
artifacts:
  mirror: null                    # a local mirror for offline installs
  # imageRepository: registry.home.arpa:5000/k8s   # every image from your own registry
  # registries: [{{host: "registry.home.arpa:5000", plainHttp: true}}]
hosts:
{chr(10).join(host_lines)}
"""
