"""The phase contract every component implements, and the context planners read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from homekube.config.model import ClusterConfig, HostSpec
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.plan.model import Step


@dataclass(frozen=True)
class LocalState:
    """What the operator machine holds (read before planning, by the effect layer)."""

    etcd_ca_cert: bytes | None = None
    etcd_ca_key: bytes | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    #: the kubeconfigs `homekube kubeconfig` wrote that still exist (path -> content)
    kubeconfigs: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    config: ClusterConfig
    facts: dict[str, HostFacts]
    local: LocalState
    now: datetime
    #: hosts homekube managed before (local inventory) that cluster.yaml no longer lists
    removed: tuple[HostSpec, ...] = ()

    def hosts(self) -> list[HostSpec]:
        """Hosts in config order that have facts (all of them, in a normal run)."""
        return [h for h in self.config.hosts if h.name in self.facts]


class Phase(Protocol):
    """A named, ordered unit of work; `plan` must be pure and idempotent."""

    name: str
    title: str

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes: ...

    def plan(self, ctx: Context) -> list[Step]: ...
