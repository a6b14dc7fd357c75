"""Bench (run by hand): a real 3-node Kubernetes cluster on lab hosts, from bare hosts.

    HOMEKUBE_LAB_SLOT=6 .venv/bin/python bench/cluster.py [--runs 5]

Brings up three fresh lab hosts with the lab's Kubernetes artifacts (`lab up 3
--kubernetes`: h1 control plane + etcd, h2 and h3 etcd + workers), then measures:
  * bare hosts -> `homekube apply` done, and -> all three nodes Ready (polled, not slept);
  * the no-op `apply` right after (median of --runs), with its change count (must be 0).
Prints a table and writes bench/results/cluster-latest.json. Needs root, like the lab.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from homekube import lab as hklab  # noqa: E402

ROLES = {"h1": "control-plane, etcd", "h2": "etcd, worker", "h3": "etcd, worker"}


def cli(*args: str, timeout: float = 1800) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "homekube", *args], capture_output=True,
                         text=True, timeout=timeout, check=False,
                         env={**os.environ, "COLUMNS": "200"})
    return res, time.monotonic() - t0


def nodes_ready() -> bool:
    ready = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {end}'
    res = hklab.host_exec("h1", "kubectl --kubeconfig=/etc/kubernetes/admin.conf get nodes "
                                f"-o jsonpath='{ready}'")
    words = res.stdout.split()
    return res.returncode == 0 and len(words) == 3 and all(w == "True" for w in words)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    config = Path(tempfile.mkdtemp(prefix="hk-bench-")) / "cluster.yaml"
    hklab.down()
    t0 = time.monotonic()
    hklab.up(3, config_path=config, kubernetes=True)
    lab_up = time.monotonic() - t0
    text = config.read_text()
    for name, roles in ROLES.items():
        old = next(ln for ln in text.splitlines() if ln.lstrip().startswith(f"- {{name: {name},"))
        text = text.replace(old, old.split("roles:")[0] + f"roles: [{roles}]}}")
    config.write_text(text)

    res, apply_s = cli("apply", "--config", str(config))
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-3000:], sep="\n")
        return 1
    t_apply = time.monotonic()
    while not nodes_ready():
        if time.monotonic() - t_apply > 600:
            print("nodes not Ready after 600 s")
            return 1
        time.sleep(0.5)
    ready_s = apply_s + (time.monotonic() - t_apply)

    noop: list[float] = []
    for _ in range(args.runs):
        res, s = cli("apply", "--config", str(config))
        if res.returncode != 0:
            print(res.stderr[-2000:])
            return 1
        noop.append(s)
    plan, _ = cli("plan", "--config", str(config), "--output", "json")
    pending = json.loads(plan.stdout)["changes"]
    out = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "labUpSeconds": round(lab_up, 1),
        "applySeconds": round(apply_s, 1),
        "bareToAllReadySeconds": round(ready_s, 1),
        "noopApplyMedianSeconds": round(statistics.median(noop), 2),
        "noopApplySeconds": [round(x, 2) for x in noop],
        "changesAfter": pending,
    }
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/results/cluster-latest.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"lab up 3 --kubernetes (artifacts cached): {lab_up:.1f} s")
    print(f"bare hosts -> apply done: {apply_s:.1f} s; -> 3 nodes Ready: {ready_s:.1f} s")
    print(f"no-op apply: median {statistics.median(noop):.2f} s over {len(noop)} runs "
          f"({', '.join(f'{x:.2f}' for x in noop)}); changes after: {pending}")
    hklab.down()
    return 0 if pending == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
