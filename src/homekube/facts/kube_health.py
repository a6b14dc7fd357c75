"""Is a Kubernetes cluster back after a restore? One command on a control plane, a pure parser.

After an etcd restore the API serves what the snapshot holds, statuses included: a node or a
pod the snapshot saw Ready still reads Ready before any kubelet has said a word. So "healthy"
here asks for evidence written after the restore:

* the API answers ``/readyz``; kube-controller-manager and kube-scheduler answer their own
  ``/healthz`` on this host (10257, 10259);
* every node homekube expects is Ready and its kubelet renewed its Lease
  (``kube-node-lease``, every ~10 s) after `since` — the kubelet talks to the restored API;
* every Deployment and DaemonSet in the system namespaces is rolled out: observed at its
  generation, every replica ready (CoreDNS, kube-proxy, the CNI). Kubelets re-sync pod
  statuses every ~10 s once they reach the API, so with fresh leases these are kubelet truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ADMIN_CONF = "/etc/kubernetes/admin.conf"
SYSTEM_NAMESPACES = ("kube-system", "kube-flannel", "calico-system", "tigera-operator")
_SECTIONS = ("nodes", "leases", "workloads")


def health_command(*, api: bool = True) -> str:
    """Print `kv` lines (time, readyz, component health) and, with `api`, the JSON sections."""
    k = f"kubectl --kubeconfig={ADMIN_CONF} --request-timeout=10s"

    def one_line(cmd: str) -> str:
        return f"$({cmd} 2>&1 | head -c 200 | tr '\\n' ' ' | sed 's/ *$//')"

    lines = [
        'echo "now $(date +%s)"',
        f'echo "controller-manager {one_line("curl -sk --max-time 5 https://127.0.0.1:10257/healthz")}"',
        f'echo "scheduler {one_line("curl -sk --max-time 5 https://127.0.0.1:10259/healthz")}"',
    ]
    if api:
        lines += [
            f'echo "readyz {one_line(f"{k} get --raw=/readyz")}"',
            f"echo '--- nodes'; {k} get nodes -o json 2>/dev/null || true",
            f"echo '--- leases'; {k} -n kube-node-lease get leases -o json 2>/dev/null || true",
            f"echo '--- workloads'; {k} get deployments,daemonsets -A -o json 2>/dev/null || true",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class Workload:
    namespace: str
    kind: str
    name: str
    ready: int
    want: int
    current: bool  # the controller has observed the latest generation

    @property
    def ok(self) -> bool:
        return self.current and self.ready >= self.want

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} {self.ready}/{self.want}"


@dataclass(frozen=True)
class Health:
    now: int | None = None
    readyz: str | None = None
    controller_manager: str | None = None
    scheduler: str | None = None
    ready: dict[str, bool] = field(default_factory=dict)  # node -> Ready condition
    renewed: dict[str, float] = field(default_factory=dict)  # node -> lease renewTime (epoch)
    workloads: tuple[Workload, ...] = ()

    def problems(self, nodes: list[str], since: float, *, api: bool = True) -> list[str]:
        """What is not back yet (empty: healthy), in words a person can act on."""
        out = []
        if self.controller_manager != "ok":
            out.append(f"kube-controller-manager /healthz: {self.controller_manager or 'no answer'}")
        if self.scheduler != "ok":
            out.append(f"kube-scheduler /healthz: {self.scheduler or 'no answer'}")
        if not api:
            return out
        if self.readyz != "ok":
            return [f"API /readyz: {self.readyz or 'no answer'}", *out]
        for n in nodes:
            if n not in self.ready:
                out.append(f"node {n}: not registered")
            elif not self.ready[n]:
                out.append(f"node {n}: not Ready")
            elif self.renewed.get(n, 0) < since:
                out.append(f"node {n}: its kubelet has not renewed its lease since the restore")
        if not self.workloads:
            out.append("no system Deployments or DaemonSets listed yet")
        out += [f"{w.kind} {w} ready" for w in self.workloads if not w.ok]
        return out

    def summary(self, nodes: list[str]) -> str:
        ws = ", ".join(str(w) for w in self.workloads)
        return (f"API /readyz ok, kube-controller-manager and kube-scheduler healthy; "
                f"{len(nodes)}/{len(nodes)} nodes Ready with their kubelets' leases renewed "
                f"({', '.join(nodes)}); system workloads ready: {ws}")


def _epoch(ts: str | None) -> float:
    if not ts:
        return 0.0
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _load(text: str) -> list[dict[str, Any]]:
    try:
        items = json.loads(text).get("items") or []
    except (ValueError, AttributeError):
        return []
    return [i for i in items if isinstance(i, dict)]


def _workload(i: dict[str, Any]) -> Workload | None:
    meta, spec, st = i.get("metadata", {}), i.get("spec", {}), i.get("status", {})
    current = int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    if i.get("kind") == "Deployment":
        want = int(spec.get("replicas", 1) or 0)
        ready = min(int(st.get("readyReplicas") or 0), int(st.get("updatedReplicas") or 0))
    elif i.get("kind") == "DaemonSet":
        want = int(st.get("desiredNumberScheduled") or 0)
        ready = min(int(st.get("numberReady") or 0), int(st.get("updatedNumberScheduled") or 0))
    else:
        return None
    return Workload(meta.get("namespace", ""), str(i["kind"]), meta.get("name", ""), ready, want,
                    current)


def parse_health(out: str) -> Health:
    kv: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    cur: str | None = None
    for line in out.splitlines():
        if line.startswith("--- ") and line[4:] in _SECTIONS:
            cur = line[4:]
            sections[cur] = []
        elif cur is not None:
            sections[cur].append(line)
        elif " " in line:
            key, _, value = line.partition(" ")
            kv[key] = value.strip()
    ready: dict[str, bool] = {}
    for n in _load("\n".join(sections.get("nodes", []))):
        conds = {c.get("type"): c.get("status") for c in n.get("status", {}).get("conditions", [])}
        ready[n["metadata"]["name"]] = conds.get("Ready") == "True"
    renewed = {le["metadata"]["name"]: _epoch(le.get("spec", {}).get("renewTime"))
               for le in _load("\n".join(sections.get("leases", [])))}
    ws = tuple(w for i in _load("\n".join(sections.get("workloads", [])))
               if (w := _workload(i)) is not None and w.namespace in SYSTEM_NAMESPACES)
    now = kv.get("now", "")
    return Health(now=int(now) if now.isdigit() else None, readyz=kv.get("readyz"),
                  controller_manager=kv.get("controller-manager"), scheduler=kv.get("scheduler"),
                  ready=ready, renewed=renewed, workloads=tuple(sorted(ws, key=str)))
