#!/usr/bin/env python3
"""No-op `apply` and `plan` on a real kubeadm cluster, run by hand (the Kubernetes layer's
share of "a second apply changes nothing, in about a second").

    HOMEKUBE_LAB_SLOT=6 .venv/bin/python bench/k8s_noop.py [--hosts 3] [--runs 5]

Brings up N lab hosts with `homekube lab up N --kubernetes` (h1 control plane + etcd, the
others workers), applies the lab's cluster.yaml (host prep, TLS etcd, containerd, kubeadm
init/join, flannel, CoreDNS), then times R no-op applies and R plans (CLI wall clock and the
time homekube reports), counts SSH connections and exec requests of one no-op apply from
asyncssh's debug log, and prints the figures with the machine's load. The bring-up itself is
timed too but depends mostly on image pulls and kubelet start, not on homekube.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py: its process runner and no-op parser


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = ap.parse_args(argv)
    bench.setup_slot(None)
    cfg = Path(tempfile.mkdtemp(prefix="hk-k8s-noop-")) / "cluster.yaml"
    try:
        bench.lab_down()
        t0 = time.perf_counter()
        bench.run([bench.HOMEKUBE, "lab", "up", str(args.hosts), "--kubernetes",
                   "--config", cfg], timeout=900)
        up = time.perf_counter() - t0
        first = bench.run([bench.HOMEKUBE, "apply", "-c", cfg, "--quiet"], timeout=1800)
        bench.say(f"lab up {args.hosts} --kubernetes: {up:.1f} s; first apply: {first.wall:.1f} s")
        bench.wait_quiet(60)
        noops = [bench.cli_noop(cfg) for _ in range(args.runs)]
        plans = []
        for _ in range(args.runs):
            p = bench.run([bench.HOMEKUBE, "plan", "-c", cfg, "-o", "json"], timeout=120)
            if json.loads(p.out)["changes"] != 0:
                raise bench.BenchError(f"plan is not empty:\n{p.out[-2000:]}")
            plans.append(p.wall)
        execs = bench.debug_log_execs(cfg)
        result = {
            "hosts": args.hosts, "runs": args.runs, "labUp_s": round(up, 1),
            "firstApply_s": round(first.wall, 1),
            "noopApplyWall_s": {"median": round(bench.med([n.wall for n in noops]), 2),
                                "min": round(min(n.wall for n in noops), 2),
                                "max": round(max(n.wall for n in noops), 2)},
            "noopApplyReported_s": round(bench.med([n.reported for n in noops]), 2),
            "noopClientCpu_s": round(bench.med([n.cpu for n in noops]), 2),
            "planWall_s": round(bench.med(plans), 2),
            "ssh": execs, "loadavg": bench.loadavg(),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if not args.keep:
            bench.lab_down()


if __name__ == "__main__":
    sys.exit(main())
