"""Hosts dropped from cluster.yaml: drain and delete the node, then clean the host (pure).

The etcd member itself is removed, quorum-checked, by the etcd phase (its shrink steps);
this phase runs after it and takes everything else off the host, one removed host at a time:
its node is drained and deleted (on a control plane), then the host is cleaned. A removed
host that cannot be reached is reported and skipped: the usual reason to remove a host is
that it died, and that must not block the rest of the cluster.
"""

from __future__ import annotations

from dataclasses import replace

from homekube.components.base import Context
from homekube.components.reset import probes as reset_probes
from homekube.components.reset import reset_steps
from homekube.config.model import ClusterConfig, HostSpec
from homekube.facts.base import shell_quote
from homekube.facts.system import Probes
from homekube.plan.model import Change, Run, Step
from homekube.plan.order import declare, one_at_a_time

(HOSTS,) = declare("remove", one_at_a_time("removed hosts", "drain", "clean"))


class RemovalPhase:
    name = "remove"
    title = "Hosts removed from cluster.yaml"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return reset_probes(config)

    def plan(self, ctx: Context) -> list[Step]:
        steps: list[Step] = []
        cfg = ctx.config
        cp = next((h for h in cfg.control_planes if h.name in ctx.facts), None)
        for i, h in enumerate(ctx.removed):
            f = ctx.facts.get(h.name)
            if f is None:
                continue
            if cfg.kubernetes.enabled and cp is not None:
                # validated, not executed here: no Kubernetes API on lab hosts
                node = shell_quote(h.name)
                kc = "--kubeconfig /etc/kubernetes/admin.conf"
                cmd = (f"if kubectl {kc} get node {node} >/dev/null 2>&1; then "
                       f"kubectl {kc} drain {node} --ignore-daemonsets --delete-emptydir-data "
                       f"--timeout=300s && kubectl {kc} delete node {node}; fi")
                steps.append(Change(cp.name, self.name, f"node {h.name}", f"drain and delete node {h.name}",
                                    f"{h.name} is no longer in cluster.yaml", (Run(cmd),),
                                    order=HOSTS.turn(i, "drain")))
            steps += [
                replace(s, order=HOSTS.turn(i, "clean")) if isinstance(s, Change) else s
                for s in reset_steps(cfg, h, f, phase=self.name,
                                     why=f"{h.name} is no longer in cluster.yaml")
            ]
        return steps
