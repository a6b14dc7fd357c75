"""Names, addresses and paths of the lab: one place, so nothing clashes with other rigs.

Every name carries an `hk` prefix (bridge, namespaces, veths, nft table) so that the lab can
live beside the reference rig and never delete or reuse anything it did not create.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Several labs can run side by side on one machine (parallel test sessions): slot N gets its
#: own bridge, subnet, namespaces, ports and directory. Slot 0 is the default.
SLOT = int(os.environ.get("HOMEKUBE_LAB_SLOT", "0") or 0)
if not 0 <= SLOT <= 9:
    raise ValueError("HOMEKUBE_LAB_SLOT must be 0..9")
_P = "hk" if SLOT == 0 else f"hk{SLOT}"

BRIDGE = f"{_P}br0"
NFT_TABLE = "homekube_lab" if SLOT == 0 else f"homekube_lab{SLOT}"  # family inet
NET4_PREFIX = f"10.77.{SLOT}"
NET6_PREFIX = "fd77:" if SLOT == 0 else f"fd77:{SLOT}:"
GATEWAY4 = f"{NET4_PREFIX}.1"
GATEWAY6 = f"{NET6_PREFIX}:1"
MIRROR_PORT = 8077 + SLOT
MIRROR_URL = f"http://{GATEWAY4}:{MIRROR_PORT}/"
# The lab's OCI registry (Debian's docker-registry, plain HTTP on the bridge). Not 5000, the
# port a packaged docker-registry started by its postinst would hold.
REGISTRY_PORT = 5077 + SLOT
REGISTRY_HOST = f"{GATEWAY4}:{REGISTRY_PORT}"
SUITE = "bookworm"
# Keeps 10+N a valid last octet with room to spare; each idle host costs ~15 MiB.
MAX_HOSTS = 60

DEFAULT_LAB_DIR = Path("/var/tmp/homekube-lab" if SLOT == 0 else f"/var/tmp/homekube-lab{SLOT}")
DEFAULT_CACHE_DIR = Path("/var/cache/homekube/lab-base")
# Built artifacts and Go's caches: shared by every slot (a build is keyed by its inputs, and
# two slots building at once wait for each other), never inside a work tree.
DEFAULT_ARTIFACTS_DIR = Path("/var/cache/homekube/lab-artifacts")
DEFAULT_GO_CACHE_DIR = Path("/var/cache/homekube/go")

HOST_NAME_RE = re.compile(r"^h([1-9][0-9]*)$")
NETNS_RE = re.compile(rf"^{_P}-h[1-9][0-9]*$")
CGROUP_RE = NETNS_RE
VETH_RE = re.compile(rf"^{_P}-v-h[1-9][0-9]*$")
OWNER_FILE = Path("/run/homekube-lab.owner" if SLOT == 0 else f"/run/homekube-lab{SLOT}.owner")


def host_name(index: int) -> str:
    return f"h{index}"


def host_index(name: str) -> int:
    """Parse `hN`; anything else is not a lab host name."""
    m = HOST_NAME_RE.match(name)
    if not m:
        raise ValueError(f"not a lab host name: {name!r} (expected h1, h2, ...)")
    return int(m.group(1))


def host_ipv4(index: int) -> str:
    return f"{NET4_PREFIX}.{10 + index}"


def host_ipv6(index: int) -> str:
    # The decimal digits are used as the hex group on purpose: h1 is fd77::11, matching
    # its IPv4 last octet 11, which is what people type when they debug.
    return f"{NET6_PREFIX}:{10 + index}"


def netns_name(index: int) -> str:
    return f"{_P}-h{index}"


def veth_name(index: int) -> str:
    name = f"{_P}-v-h{index}"
    assert len(name) <= 15, "Linux interface names are limited to 15 characters"
    return name


@dataclass(frozen=True)
class LabPaths:
    """Where the lab keeps its state; derived from the environment once per call."""

    root: Path
    base: Path

    @classmethod
    def from_env(cls) -> LabPaths:
        root = Path(os.environ.get("HOMEKUBE_LAB_DIR") or DEFAULT_LAB_DIR)
        base = Path(os.environ.get("HOMEKUBE_LAB_CACHE") or DEFAULT_CACHE_DIR)
        return cls(root=root.absolute(), base=base.absolute())

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def run(self) -> Path:
        """PID records of the daemons the lab started."""
        return self.root / "run"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def mirror(self) -> Path:
        return self.root / "mirror"

    @property
    def registry(self) -> Path:
        """The registry's storage; kept across `down` like the mirror."""
        return self.root / "registry"

    @property
    def cluster_state(self) -> Path:
        return self.root / "state"

    def host_dir(self, name: str) -> Path:
        return self.hosts / name


@dataclass(frozen=True)
class ArtifactPaths:
    """Where built artifacts and Go's caches live (HOMEKUBE_ARTIFACTS_DIR / HOMEKUBE_GO_CACHE
    point them elsewhere, e.g. at empty directories to time a cold build)."""

    root: Path
    go: Path

    @classmethod
    def from_env(cls) -> ArtifactPaths:
        root = Path(os.environ.get("HOMEKUBE_ARTIFACTS_DIR") or DEFAULT_ARTIFACTS_DIR)
        go = Path(os.environ.get("HOMEKUBE_GO_CACHE") or DEFAULT_GO_CACHE_DIR)
        return cls(root=root.absolute(), go=go.absolute())

    @property
    def gomodcache(self) -> Path:
        return self.go / "mod"

    @property
    def gocache(self) -> Path:
        return self.go / "build"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"
