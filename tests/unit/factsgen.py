"""Synthetic HostFacts for pure planner tests (real hosts are covered by tests/rig)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from homekube.facts.host import HostFacts
from homekube.facts.system import Address, Memory, OsInfo, PackageState, SysctlState, UnitState

GIB = 1024**3


def debian12(host: str = "h1", *, v4: str = "192.0.2.11", v6: str | None = "2001:db8::11",
             **over: Any) -> HostFacts:
    addrs = [Address("lo", 4, "127.0.0.1", 8), Address("eth0", 4, v4, 24)]
    if v6:
        addrs.append(Address("eth0", 6, v6, 64))
    f = HostFacts(
        host=host,
        os=OsInfo("debian", "12", (), "Debian GNU/Linux 12 (bookworm)"),
        arch="x86_64", kernel="6.1.0-18-amd64", cpus=2,
        memory=Memory(4 * GIB, 3 * GIB, 0, 0), swaps=[], fstab=[], cgroup=2, hostname=host,
        addresses=addrs, files={}, sysctls={}, units={}, packages={}, modules={},
        commands=frozenset({"ip", "iptables", "mount", "nsenter"}), disk={"/": 20 * GIB},
    )
    return replace(f, **over)


def converged_hostprep(f: HostFacts, sysctls: dict[str, str], files: dict[str, bytes]) -> HostFacts:
    """Facts of a host on which host prep has already run."""
    import hashlib

    from homekube.facts.system import FileState

    pkgs = {p: PackageState(p, "1") for p in
            ["iptables", "iproute2", "socat", "conntrack", "ethtool", "ca-certificates", "curl", "tar"]}
    fs = {p: FileState(p, 0o644, "root", "root", len(c), hashlib.sha256(c).hexdigest(), c)
          for p, c in files.items()}
    return replace(
        f, packages=pkgs, files={**f.files, **fs},
        sysctls={k: SysctlState(v, True) for k, v in sysctls.items()},
        modules={"overlay": "builtin", "br_netfilter": "loaded"},
        units={"NetworkManager.service": UnitState("NetworkManager.service", "not-found", "inactive", "")},
    )
