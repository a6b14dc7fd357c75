"""Every path, port and URL of an etcd member that homekube installs (facts.md §3.3, §4.4).

Imports nothing from homekube, so the config model, the PKI specs and the renderers can all
take their etcd paths from here.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CONFIG_DIR = "/etc/etcd"
CONFIG_PATH = f"{CONFIG_DIR}/etcd.conf.yml"
#: `set -a; . /etc/etcd/etcdctl.env` points etcdctl at the local member over mTLS
ENV_FILE = f"{CONFIG_DIR}/etcdctl.env"
#: copies of the member's keys that the etcd user can read (kubeadm's are root-only)
PKI_DIR = f"{CONFIG_DIR}/pki"
UNIT = "etcd.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
DEFAULT_DATA_DIR = "/var/lib/etcd"
#: the etcd system user's home (it is never created: the data dir is made by the etcd phase)
USER_HOME = DEFAULT_DATA_DIR

#: where the release tarball's binaries go, and where distro packages put them
TARBALL_BIN = "/usr/local/bin"
PACKAGE_BIN = "/usr/bin"
BINARIES = ("etcd", "etcdctl", "etcdutl")

#: kubeadm's certificatesDir; the apiserver pod mounts it, so its etcd files live here
KUBEADM_PKI = "/etc/kubernetes/pki"
KUBEADM_ETCD_PKI = f"{KUBEADM_PKI}/etcd"
CA_CERT = f"{KUBEADM_ETCD_PKI}/ca.crt"
CA_KEY_ON_HOST = f"{KUBEADM_ETCD_PKI}/ca.key"
#: the client pair every local client (etcdctl, curl, the backup script) presents
CLIENT_CERT = f"{KUBEADM_ETCD_PKI}/healthcheck-client.crt"
CLIENT_KEY = f"{KUBEADM_ETCD_PKI}/healthcheck-client.key"

CLIENT_PORT = 2379
PEER_PORT = 2380
METRICS_PORT = 2381
METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}"
#: how every local client reaches the member on this host
LOCAL_ENDPOINT = f"https://127.0.0.1:{CLIENT_PORT}"
#: etcd's JSON gateway on the local member
LOCAL_GATEWAY = f"{LOCAL_ENDPOINT}/v3"


class Addressed(Protocol):
    """What layout needs of a host (config's HostSpec has it)."""

    @property
    def address(self) -> IPAddress: ...
    @property
    def ipv4(self) -> ipaddress.IPv4Address | None: ...
    @property
    def ipv6(self) -> ipaddress.IPv6Address | None: ...


def url(addr: IPAddress | str, port: int) -> str:
    a = ipaddress.ip_address(str(addr))
    host = f"[{a}]" if a.version == 6 else str(a)
    return f"https://{host}:{port}"


def peer_url(h: Addressed) -> str:
    """The one peer URL a member advertises: its primary address."""
    return url(h.address, PEER_PORT)


def client_url(h: Addressed) -> str:
    """The client URL of a member at its primary address (what the operator dials)."""
    return url(h.address, CLIENT_PORT)


def client_urls(h: Addressed) -> list[str]:
    """Every URL a client may dial: loopback, IPv4 and IPv6 (bracketed)."""
    out = [url("127.0.0.1", CLIENT_PORT)]
    for a in (h.ipv4, h.ipv6):
        if a is not None:
            out.append(url(a, CLIENT_PORT))
    return out


def advertise_client_urls(h: Addressed) -> list[str]:
    return [u for u in client_urls(h) if "127.0.0.1" not in u]


def member_dir(data_dir: str) -> str:
    """The directory etcd creates inside its data dir once the member has data."""
    return f"{data_dir.rstrip('/')}/member"
