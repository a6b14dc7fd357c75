"""The ordered list of phases an apply runs; later issues append their phases here."""

from __future__ import annotations

from homekube.components.base import Phase
from homekube.components.hostprep import HostPrepPhase


def all_phases() -> list[Phase]:
    return [HostPrepPhase()]


def phase_names() -> list[str]:
    return [p.name for p in all_phases()]


def rendered_files(cfg: object) -> list[tuple[str, str, bytes, bool]]:
    """(host, path, content, secret) for every file homekube writes; filled in per component."""
    from homekube.components.hostprep import MODULES_FILE, SYSCTL_FILE, modules_file, sysctl_file
    from homekube.config.model import ClusterConfig

    assert isinstance(cfg, ClusterConfig)
    out: list[tuple[str, str, bytes, bool]] = []
    for h in cfg.hosts:
        out.append((h.name, MODULES_FILE, modules_file(), False))
        out.append((h.name, SYSCTL_FILE, sysctl_file(cfg), False))
    return out
