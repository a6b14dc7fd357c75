"""HostFacts: the parsed, typed view of one host that every planner reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homekube.facts.system import (
    Address,
    FileState,
    FstabEntry,
    Memory,
    OsInfo,
    PackageState,
    SwapDevice,
    SysctlState,
    UnitState,
)


@dataclass(frozen=True)
class HostFacts:
    host: str
    os: OsInfo
    arch: str
    kernel: str
    cpus: int
    memory: Memory
    swaps: list[SwapDevice]
    fstab: list[FstabEntry]
    cgroup: int
    hostname: str
    addresses: list[Address]
    files: dict[str, FileState | None]
    sysctls: dict[str, SysctlState]
    units: dict[str, UnitState]
    packages: dict[str, PackageState]
    modules: dict[str, str]
    commands: frozenset[str]
    disk: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def file(self, path: str) -> FileState | None:
        return self.files.get(path)

    def unit(self, name: str) -> UnitState:
        return self.units.get(name) or UnitState(name, "not-found", "inactive", "")

    def installed(self, package: str) -> bool:
        st = self.packages.get(package)
        return st is not None and st.version is not None

    def has_address(self, addr: str) -> bool:
        return any(a.address == addr for a in self.addresses)


def build_host_facts(host: str, parsed: dict[str, Any]) -> HostFacts:
    """Assemble HostFacts from `parse_all` output; unknown names land in `extra`."""
    known = {
        "os", "arch", "kernel", "cpus", "memory", "swaps", "fstab", "cgroup", "hostname",
        "addresses", "files", "sysctls", "units", "packages", "modules", "commands", "disk",
    }
    return HostFacts(
        host=host,
        os=parsed["os"],
        arch=parsed["arch"],
        kernel=parsed["kernel"],
        cpus=parsed["cpus"],
        memory=parsed["memory"],
        swaps=parsed["swaps"],
        fstab=parsed["fstab"],
        cgroup=parsed["cgroup"],
        hostname=parsed["hostname"],
        addresses=parsed["addresses"],
        files=parsed.get("files", {}),
        sysctls=parsed.get("sysctls", {}),
        units=parsed.get("units", {}),
        packages=parsed.get("packages", {}),
        modules=parsed.get("modules", {}),
        commands=parsed.get("commands", frozenset()),
        disk=parsed.get("disk", {}),
        extra={k: v for k, v in parsed.items() if k not in known},
    )
