"""Hosts dropped from cluster.yaml: drain and delete the node, then clean the host (pure).

Two phases, around the etcd phase (whose shrink steps remove the member, quorum-checked):

    drain   before etcd: on a control plane, one removed host at a time, `kubectl drain`
            (evictions, so PodDisruptionBudgets are honoured) within `timeouts.wait`, then
            `kubectl delete node`. A drain that cannot finish stops the apply there with the
            pods it could not evict and the budgets that forbid it; nothing else was changed
            yet (the etcd member is still there, the host untouched), and the node stays
            cordoned until the next apply tries again.
    remove  last: clean each removed host back to what it was (components.reset).

A removed host that cannot be reached is reported and skipped: the usual reason to remove a
host is that it died, and that must not block the rest of the cluster (its node is still
drained and deleted through the API).
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

(DRAINS,) = declare("drain", one_at_a_time("removed nodes", "drain"))
(HOSTS,) = declare("remove", one_at_a_time("removed hosts", "clean"))

KUBECTL = "kubectl --kubeconfig=/etc/kubernetes/admin.conf"
#: seconds the step gets beyond kubectl's own --timeout, so kubectl's message is the one shown
DRAIN_GRACE = 60


def drain_command(node: str, seconds: int) -> str:
    """Drain `node` (if it is still a node) within `seconds`, then delete it; explain a failure.

    `kubectl drain` evicts through the Eviction API: a pod whose PodDisruptionBudget allows
    no disruption is retried every 5 s until `--timeout`; then this names the pods still on
    the node and the budgets that allow no disruption.
    """
    n = shell_quote(node)
    left = (f"{KUBECTL} get pods -A --field-selector spec.nodeName={n} --no-headers "
            "-o custom-columns=NS:.metadata.namespace,NAME:.metadata.name,"
            "OWNER:.metadata.ownerReferences[0].kind,PHASE:.status.phase "
            "| awk '$3 != \"DaemonSet\" && $4 != \"Succeeded\" && $4 != \"Failed\" "
            "{printf \"%s%s/%s\", sep, $1, $2; sep=\", \"}'")
    budgets = (f"{KUBECTL} get pdb -A -o jsonpath='{{range .items[?(@.status.disruptionsAllowed==0)]}}"
               "{.metadata.namespace}/{.metadata.name} {end}'")
    return "\n".join([
        f"if ! {KUBECTL} get node {n} >/dev/null 2>&1; then echo \"node {node} is already gone\"; exit 0; fi",
        f"if ! {KUBECTL} drain {n} --ignore-daemonsets --delete-emptydir-data --timeout={seconds}s; then",
        f"  pods=$({left} 2>/dev/null || true)",
        f"  pdbs=$({budgets} 2>/dev/null | sed 's/ *$//' || true)",
        f"  echo \"node {node} was not drained within {seconds} s (timeouts.wait): "
        "pods still on it: ${pods:-none}; PodDisruptionBudgets allowing no disruption: "
        f"${{pdbs:-none}}. Nothing else was changed; {node} stays cordoned. Let the budgets "
        "allow an eviction (more replicas, or relax the budget) and apply again\" >&2",
        "  exit 1",
        "fi",
        f"{KUBECTL} delete node {n}",
    ])


class DrainPhase:
    name = "drain"
    title = "Nodes removed from cluster.yaml: drain and delete"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return Probes()

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        cp = next((h for h in cfg.control_planes if h.name in ctx.facts), None)
        if not cfg.kubernetes.enabled or cp is None:
            return []
        wait = cfg.timeouts.wait
        return [
            Change(cp.name, self.name, f"node {h.name}", f"drain and delete node {h.name}",
                   f"{h.name} is no longer in cluster.yaml; its pods move to the other nodes "
                   f"(PodDisruptionBudgets honoured, up to {wait} s)",
                   (Run(drain_command(h.name, wait), f"kubectl drain {h.name}, then delete the node",
                        kind="wait", timeout=wait + DRAIN_GRACE),),
                   order=DRAINS.turn(i, "drain"))
            for i, h in enumerate(ctx.removed)
            if h.has("control-plane") or h.has("worker")
        ]


class RemovalPhase:
    name = "remove"
    title = "Hosts removed from cluster.yaml"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return reset_probes(config)

    def plan(self, ctx: Context) -> list[Step]:
        steps: list[Step] = []
        cfg = ctx.config
        for i, h in enumerate(ctx.removed):
            f = ctx.facts.get(h.name)
            if f is None:
                continue
            steps += [
                replace(s, order=HOSTS.turn(i, "clean")) if isinstance(s, Change) else s
                for s in reset_steps(cfg, h, f, phase=self.name,
                                     why=f"{h.name} is no longer in cluster.yaml")
            ]
        return steps
