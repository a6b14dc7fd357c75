"""Every per-OS difference lives here: package manager, package names, paths, support matrix.

Planners and renderers ask a family object (`Debian`, `EL`) instead of testing `os.id` or
the family's name themselves, so adding a distribution means editing one file: install,
hold and pin, repositories and their keyrings, removal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from homekube.facts.base import shell_words
from homekube.facts.system import OsInfo
from homekube.shell import fetch_signing_key

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

#: what the Kubernetes repository's `exclude=` keeps `dnf upgrade` away from
EL_EXCLUDED = "kubelet kubeadm kubectl cri-tools kubernetes-cni"


@dataclass(frozen=True)
class RepoFile:
    """A package repository definition to write, and the signing key it trusts.

    ``keyring`` is set for apt: the caller fetches ``key_url`` and stores it *dearmored* there
    (``gpg --dearmor``), matching the ``signed-by=`` in ``content``. For dnf the key URL is in
    the ``.repo`` file itself (``gpgkey=``) and ``keyring`` is ``None``.
    """

    path: str
    content: str
    key_url: str
    keyring: str | None = None
    mode: int = 0o644


def fetch_keyring_command(rf: RepoFile) -> str:
    """Fetch `rf`'s signing key and store it dearmored at its keyring (atomically)."""
    assert rf.keyring is not None
    return fetch_signing_key(rf.key_url, rf.keyring).text

class OsFamily(ABC):
    """One family of distributions: how packages are named, installed, held and removed."""

    family: ClassVar[Family]
    #: the logical packages Kubernetes nodes need on this family besides the Kubernetes ones
    node_extras: ClassVar[tuple[str, ...]] = ()
    #: logical packages needed before a repository's signing key can be stored
    keyring_tools: ClassVar[tuple[str, ...]] = ()
    kubelet_env_file: ClassVar[str]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OsFamily) and other.family == self.family

    def __hash__(self) -> int:
        return hash(self.family)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def package(self, logical: str) -> str | None:
        return PACKAGES[logical][self.family]

    def packages(self, logicals: Sequence[str]) -> list[str]:
        return [p for p in (self.package(x) for x in logicals) if p]

    @abstractmethod
    def install_command(self, packages: list[str]) -> str: ...

    @abstractmethod
    def list_installed_command(self) -> str:
        """Print installed package names, sorted (to record what an install added)."""

    @abstractmethod
    def remove_command(self, packages: list[str]) -> str: ...

    @abstractmethod
    def version_pin(self, package: str, glob: str) -> str:
        """`package` pinned to versions matching `glob`, as the package manager spells it."""

    @abstractmethod
    def install_held_command(self, pinned: list[str], held: Sequence[str]) -> tuple[str, str]:
        """Install `pinned` and keep `held` from moving on upgrades: (command, how it is kept)."""

    @abstractmethod
    def hold_command(self, packages: Sequence[str]) -> str | None:
        """Hold installed `packages` at their version; None: the repository already keeps them."""

    @abstractmethod
    def upgrade_held_command(self, names: Sequence[str], pins: Sequence[str]) -> tuple[str, str]:
        """Move held `names` to `pins` and hold them again: (command, how)."""

    @abstractmethod
    def repository(self, project: str, title: str, base: str, header: str) -> RepoFile:
        """The repository definition of `project` served under `base` (``deb/`` or ``rpm/`` below it)."""

    def install_recorded(self, packages: list[str], record: str) -> str:
        """Install, and append every package the install added (dependencies too) to `record`.

        `reset` later removes exactly those, so a host goes back to its own package set.
        """
        return self.record_install(self.install_command(packages), record)

    def record_install(self, command: str, record: str) -> str:
        """Run the install `command`, and append every package it added to `record`."""
        d = record.rsplit("/", 1)[0]
        return (
            f"hk_before=$(mktemp); {self.list_installed_command()} > \"$hk_before\"; "
            f"{command} && install -d -m 0755 {d} && "
            f"{self.list_installed_command()} | comm -13 \"$hk_before\" - >> {record}; "
            'rc=$?; rm -f "$hk_before"; exit $rc'
        )


class Debian(OsFamily):
    """Debian and Ubuntu: apt, `apt-mark hold`, signed-by keyrings."""

    family = "debian"
    # apt keyrings are stored dearmored (gpg --dearmor)
    keyring_tools = ("gpg",)
    kubelet_env_file = "/etc/default/kubelet"

    def install_command(self, packages: list[str]) -> str:
        return (
            "export DEBIAN_FRONTEND=noninteractive; "
            f"apt-get update -q -o Dpkg::Use-Pty=0 {APT_NET_OPTIONS} >/dev/null && "
            f"apt-get install -y -q -o Dpkg::Use-Pty=0 {APT_NET_OPTIONS} --no-install-recommends "
            f"{shell_words(sorted(packages))}"
        )

    def list_installed_command(self) -> str:
        return "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' | awk '$1 ~ /^.i/{print $2}' | sort"

    def remove_command(self, packages: list[str]) -> str:
        # the Kubernetes packages are held (apt-mark hold): a purge must be allowed to change them
        return ("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --allow-change-held-packages "
                f"{shell_words(sorted(packages))}")

    def version_pin(self, package: str, glob: str) -> str:
        return f"{package}={glob}"

    def install_held_command(self, pinned: list[str], held: Sequence[str]) -> tuple[str, str]:
        return (f"{self.install_command(pinned)} && apt-mark hold {shell_words(list(held))} >/dev/null",
                "apt-mark hold keeps `apt upgrade` from changing the cluster's version")

    def hold_command(self, packages: Sequence[str]) -> str | None:
        return f"apt-mark hold {shell_words(list(packages))} >/dev/null"

    def upgrade_held_command(self, names: Sequence[str], pins: Sequence[str]) -> tuple[str, str]:
        n, p = shell_words(list(names)), shell_words(list(pins))
        cmd = (
            "export DEBIAN_FRONTEND=noninteractive\n"
            f"apt-mark unhold {n} >/dev/null\n"
            f"rc=0; {{ apt-get update -q -o Dpkg::Use-Pty=0 {APT_NET_OPTIONS} >/dev/null && "
            f"apt-get install -y -q -o Dpkg::Use-Pty=0 {APT_NET_OPTIONS} --no-install-recommends "
            f"--allow-change-held-packages -o Dpkg::Options::=--force-confold {p}; }} || rc=$?\n"
            f"apt-mark hold {n} >/dev/null\n"
            "exit $rc"
        )
        return cmd, "unhold, install, hold again"

    def repository(self, project: str, title: str, base: str, header: str) -> RepoFile:
        keyring = f"/etc/apt/keyrings/{project}-apt-keyring.gpg"
        return RepoFile(
            path=f"/etc/apt/sources.list.d/{project}.list",
            content=f"{header}deb [signed-by={keyring}] {base}deb/ /\n",
            key_url=f"{base}deb/Release.key",
            keyring=keyring,
        )


class EL(OsFamily):
    """Enterprise Linux 9 (RHEL, Rocky, Alma, CentOS Stream): dnf, the repository's `exclude=`."""

    family = "rhel"
    node_extras = ("container-selinux",)
    kubelet_env_file = "/etc/sysconfig/kubelet"

    def install_command(self, packages: list[str]) -> str:
        return f"dnf install -y -q {shell_words(sorted(packages))}"

    def list_installed_command(self) -> str:
        return "rpm -qa --qf '%{NAME}\\n' | sort"

    def remove_command(self, packages: list[str]) -> str:
        return f"dnf remove -y -q {shell_words(sorted(packages))}"

    def version_pin(self, package: str, glob: str) -> str:
        return f"{package}-{glob}"

    def install_held_command(self, pinned: list[str], held: Sequence[str]) -> tuple[str, str]:
        return (f"dnf install -y -q --disableexcludes=kubernetes {shell_words(sorted(pinned))}",
                "the repository's exclude= keeps `dnf upgrade` away from them")

    def hold_command(self, packages: Sequence[str]) -> str | None:
        return None

    def upgrade_held_command(self, names: Sequence[str], pins: Sequence[str]) -> tuple[str, str]:
        return (f"dnf install -y -q --disableexcludes=kubernetes {shell_words(list(pins))}",
                "the repository's exclude= is lifted for this install only")

    def repository(self, project: str, title: str, base: str, header: str) -> RepoFile:
        key_url = f"{base}rpm/repodata/repomd.xml.key"
        lines = [
            f"[{project}]",
            f"name={title}",
            f"baseurl={base}rpm/",
            "enabled=1",
            "gpgcheck=1",
            f"gpgkey={key_url}",
        ]
        if project == "kubernetes":
            lines.append(f"exclude={EL_EXCLUDED}")
        return RepoFile(
            path=f"/etc/yum.repos.d/{project}.repo",
            content=header + "\n".join(lines) + "\n",
            key_url=key_url,
        )


DEBIAN = Debian()
RHEL = EL()
#: every family, by the name `OsInfo.family` reports
FAMILIES: dict[Family, OsFamily] = {"debian": DEBIAN, "rhel": RHEL}


def family_named(name: Family | OsFamily) -> OsFamily:
    if isinstance(name, OsFamily):
        return name
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown OS family {name!r} (debian or rhel)") from None


def family_of(os: OsInfo) -> OsFamily | None:
    fam = os.family
    if fam == "unknown":
        return None
    return FAMILIES[fam]


def supported(os: OsInfo) -> bool:
    versions = SUPPORTED.get(os.id)
    if versions is None:
        return False
    return os.version_id in versions or os.major in versions


def supported_list() -> str:
    return "Debian 12/13, Ubuntu 22.04/24.04, Rocky/Alma/RHEL/CentOS Stream 9"
