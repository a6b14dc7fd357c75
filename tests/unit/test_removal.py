"""Node removal's drain: planned before etcd, bounded by timeouts.wait, and a blocked drain
(a PodDisruptionBudget) ends with a message naming the node, the pods and the budgets.

The drain script runs here for real (bash) against a stand-in `kubectl` that answers like
kubectl does; tests/rig/test_k8s_day2.py runs it against a real cluster.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from homekube.components.base import Context, LocalState
from homekube.components.removal import DRAIN_GRACE, DrainPhase, drain_command
from homekube.config.loader import load_text
from homekube.plan.model import Change, Run
from tests.unit.test_kubernetes_plan import HA, NOW, host, installed

FAKE_KUBECTL = r"""#!/bin/bash
echo "$*" >> "$LOG"
args=" $* "
case "$args" in
  *" get node h3 "*) [ "$NODE" = there ] && exit 0 || { echo 'Error from server (NotFound)' >&2; exit 1; } ;;
  *" drain "*)
    echo "node/h3 cordoned"
    if [ "$DRAIN" = blocked ]; then
      echo "evicting pod shop/web-1"
      echo "error when evicting pods/\"web-1\" -n \"shop\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget." >&2
      echo "error: unable to drain node \"h3\" due to error: [error when waiting for pod \"web-1\" in namespace \"shop\" to terminate: global timeout reached: 45s], continuing command..." >&2
      exit 1
    fi
    echo "node/h3 drained"; exit 0 ;;
  *" get pods "*) printf 'shop web-1 ReplicaSet Running\nkube-flannel ds-x DaemonSet Running\nshop done-1 Job Succeeded\n' ;;
  *" get pdb "*) printf 'shop/web-pdb ' ;;
  *" delete node "*) echo 'node "h3" deleted' ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def run_drain(tmp: Path, *, node: str = "there", drain: str = "ok") -> tuple[subprocess.CompletedProcess[str], str]:
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    k = bindir / "kubectl"
    k.write_text(FAKE_KUBECTL)
    k.chmod(0o755)
    log = tmp / "calls"
    log.write_text("")
    res = subprocess.run(["bash", "-c", "set -euo pipefail\n" + drain_command("h3", 45)],
                         capture_output=True, text=True, timeout=30, check=False,
                         env={"PATH": f"{bindir}:/usr/bin:/bin", "LOG": str(log), "NODE": node,
                              "DRAIN": drain})
    return res, log.read_text()


def test_a_drain_blocked_by_a_budget_names_node_pods_and_budgets(tmp_path: Path) -> None:
    res, calls = run_drain(tmp_path, drain="blocked")
    assert res.returncode == 1
    assert ("node h3 was not drained within 45 s (timeouts.wait): pods still on it: shop/web-1; "
            "PodDisruptionBudgets allowing no disruption: shop/web-pdb. Nothing else was changed; "
            "h3 stays cordoned.") in res.stderr, res.stderr
    assert "delete node" not in calls  # the node stays until its pods could leave
    assert "--timeout=45s" in calls and "--ignore-daemonsets" in calls


def test_a_drain_that_finishes_deletes_the_node(tmp_path: Path) -> None:
    res, calls = run_drain(tmp_path)
    assert res.returncode == 0, res.stderr
    assert calls.splitlines()[-1].endswith("delete node h3")


def test_a_node_already_gone_is_not_an_error(tmp_path: Path) -> None:
    res, calls = run_drain(tmp_path, node="gone")
    assert res.returncode == 0 and "node h3 is already gone" in res.stdout
    assert "drain" not in calls


@pytest.mark.parametrize("wait", [60, 900])
def test_drain_is_planned_on_a_control_plane_within_timeouts_wait(wait: int) -> None:
    cfg = load_text(HA.replace("hosts:", f"timeouts: {{wait: {wait}}}\nhosts:", 1))
    kept = cfg.model_copy(update={"hosts": [h for h in cfg.hosts if h.name != "w1"]})
    facts = {n: installed(cfg, host(cfg, n)) for n in ("cp1", "cp2", "cp3", "w1")}
    gone = tuple(h for h in cfg.hosts if h.name == "w1")
    (step,) = DrainPhase().plan(Context(kept, facts, LocalState(), NOW, removed=gone))
    assert isinstance(step, Change) and step.host == "cp1" and step.summary == "drain and delete node w1"
    (run,) = step.actions
    assert isinstance(run, Run) and run.kind == "wait" and run.timeout == wait + DRAIN_GRACE
    assert f"--timeout={wait}s" in run.command


def test_an_etcd_only_host_has_no_node_to_drain() -> None:
    cfg = load_text(HA)
    etcd_only = cfg.hosts[0].model_copy(update={"name": "e9", "roles": ("etcd",)})
    facts = {n: installed(cfg, host(cfg, n)) for n in ("cp1", "cp2", "cp3", "w1")}
    assert DrainPhase().plan(Context(cfg, facts, LocalState(), NOW, removed=(etcd_only,))) == []
