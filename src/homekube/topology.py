"""Who plays which part in the cluster, answered once (pure: config, facts, local inventory).

The etcd members and their peer URLs, the first control plane, the API endpoint, and the
hosts being removed: planners and verbs ask here instead of filtering `cfg.hosts` themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from homekube.config.model import ClusterConfig, HostSpec
from homekube.etcd import layout
from homekube.render.kubernetes import control_plane_endpoint


@dataclass(frozen=True)
class Topology:
    config: ClusterConfig
    #: hosts managed before (local inventory) that cluster.yaml no longer lists
    removed: tuple[HostSpec, ...] = ()

    @property
    def etcd_members(self) -> tuple[HostSpec, ...]:
        """The wanted etcd members, in cluster.yaml order (the order they join in)."""
        return self.config.etcd_hosts

    @property
    def etcd_names(self) -> list[str]:
        return [h.name for h in self.etcd_members]

    @property
    def etcd_peers(self) -> list[tuple[str, str]]:
        """(name, peer URL) of every wanted member: a new cluster's initial-cluster."""
        return [(h.name, layout.peer_url(h)) for h in self.etcd_members]

    @property
    def etcd_peer_urls(self) -> set[str]:
        return {layout.peer_url(h) for h in self.etcd_members}

    @property
    def etcd_client_urls(self) -> list[str]:
        """Each member's client URL at its primary address."""
        return [layout.client_url(h) for h in self.etcd_members]

    @property
    def first_control_plane(self) -> HostSpec | None:
        cps = self.config.control_planes
        return cps[0] if cps else None

    def first_reachable_control_plane(self, reachable: Collection[str]) -> HostSpec | None:
        return next((h for h in self.config.control_planes if h.name in reachable), None)

    @property
    def api_endpoint(self) -> str | None:
        """`host:port` of the Kubernetes API, or None without Kubernetes or a control plane."""
        if not self.config.kubernetes.enabled or not self.config.control_planes:
            return None
        return control_plane_endpoint(self.config)

    @property
    def removed_names(self) -> list[str]:
        return [h.name for h in self.removed]

    def etcd_hosts_among(self, names: Sequence[str]) -> list[HostSpec]:
        """The wanted etcd members among `names` (e.g. the hosts that have facts), in config order."""
        wanted = set(names)
        return [h for h in self.etcd_members if h.name in wanted]


def topology(config: ClusterConfig, removed: Sequence[HostSpec] = ()) -> Topology:
    return Topology(config, tuple(removed))
