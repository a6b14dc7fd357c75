"""Every per-OS difference lives here: package manager, package names, paths, support matrix.

Planners ask this module instead of testing `os.id` themselves, so adding a distribution
means editing one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from homekube.facts.base import shell_words
from homekube.facts.system import OsInfo

Family = Literal["debian", "rhel"]

#: (os id, major or full version) pairs homekube supports (issue #2; facts.md §0)
SUPPORTED: dict[str, tuple[str, ...]] = {
    "debian": ("12", "13"),
    "ubuntu": ("22.04", "24.04"),
    "rocky": ("9",),
    "almalinux": ("9",),
    "rhel": ("9",),
    "centos": ("9",),
}

#: logical package name -> name per family (None: not needed / not available there)
PACKAGES: dict[str, dict[Family, str | None]] = {
    "iptables": {"debian": "iptables", "rhel": "iptables-nft"},
    "iproute": {"debian": "iproute2", "rhel": "iproute"},
    "socat": {"debian": "socat", "rhel": "socat"},
    "conntrack": {"debian": "conntrack", "rhel": "conntrack-tools"},
    "ethtool": {"debian": "ethtool", "rhel": "ethtool"},
    "ca-certificates": {"debian": "ca-certificates", "rhel": "ca-certificates"},
    "curl": {"debian": "curl", "rhel": "curl"},
    "gpg": {"debian": "gpg", "rhel": "gnupg2"},
    "tar": {"debian": "tar", "rhel": "tar"},
    "etcd-server": {"debian": "etcd-server", "rhel": "etcd"},
    "etcd-client": {"debian": "etcd-client", "rhel": None},
    "container-selinux": {"debian": None, "rhel": "container-selinux"},
}

#: tools kubeadm's preflight wants on PATH (facts.md §1.2), and optional ones
REQUIRED_COMMANDS = ("ip", "iptables", "mount", "nsenter")
OPTIONAL_COMMANDS = ("ethtool", "socat", "tc", "conntrack")

#: apt's own default is to wait 120 s on a stalled mirror and never retry; a flaky home
#: uplink or proxy is better served by a shorter wait and a few retries.
APT_NET_OPTIONS = "-o Acquire::Retries=3 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30"


@dataclass(frozen=True)
class OsFamily:
    family: Family

    def package(self, logical: str) -> str | None:
        return PACKAGES[logical][self.family]

    def packages(self, logicals: list[str]) -> list[str]:
        return [p for p in (self.package(x) for x in logicals) if p]

    def install_command(self, packages: list[str]) -> str:
        words = shell_words(sorted(packages))
        if self.family == "debian":
            return (
                "export DEBIAN_FRONTEND=noninteractive; "
                f"apt-get update -q -o Dpkg::Use-Pty=0 {APT_NET_OPTIONS} >/dev/null && "
                f"apt-get install -y -q -o Dpkg::Use-Pty=0 {APT_NET_OPTIONS} --no-install-recommends "
                f"{words}"
            )
        return f"dnf install -y -q {words}"

    def list_installed_command(self) -> str:
        """Print installed package names, sorted (to record what an install added)."""
        if self.family == "debian":
            return "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' | awk '$1 ~ /^.i/{print $2}' | sort"
        return "rpm -qa --qf '%{NAME}\\n' | sort"

    def install_recorded(self, packages: list[str], record: str) -> str:
        """Install, and append every package the install added (dependencies too) to `record`.

        `reset` later removes exactly those, so a host goes back to its own package set.
        """
        d = record.rsplit("/", 1)[0]
        return (
            f"hk_before=$(mktemp); {self.list_installed_command()} > \"$hk_before\"; "
            f"{self.install_command(packages)} && install -d -m 0755 {d} && "
            f"{self.list_installed_command()} | comm -13 \"$hk_before\" - >> {record}; "
            'rc=$?; rm -f "$hk_before"; exit $rc'
        )

    def remove_command(self, packages: list[str]) -> str:
        words = shell_words(sorted(packages))
        if self.family == "debian":
            return f"DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {words}"
        return f"dnf remove -y -q {words}"

    @property
    def kubelet_env_file(self) -> str:
        return "/etc/default/kubelet" if self.family == "debian" else "/etc/sysconfig/kubelet"


def family_of(os: OsInfo) -> OsFamily | None:
    fam = os.family
    if fam == "unknown":
        return None
    return OsFamily(fam)


def supported(os: OsInfo) -> bool:
    versions = SUPPORTED.get(os.id)
    if versions is None:
        return False
    return os.version_id in versions or os.major in versions


def supported_list() -> str:
    return "Debian 12/13, Ubuntu 22.04/24.04, Rocky/Alma/RHEL/CentOS Stream 9"
