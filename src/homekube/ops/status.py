"""`homekube status`: hosts now; etcd and Kubernetes sections plug in as they land."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from homekube.config.model import ClusterConfig
from homekube.ops.session import open_session


async def run_status(cfg: ClusterConfig, console: Console, *, as_json: bool = False) -> int:
    s = await open_session(cfg, lock=False, enforce_preflight=False)
    try:
        data: dict[str, Any] = {"cluster": cfg.name, "hosts": []}
        for h in cfg.hosts:
            f = s.facts[h.name]
            data["hosts"].append({
                "name": h.name, "address": str(h.address), "roles": list(h.roles),
                "os": f.os.pretty, "kernel": f.kernel, "cpus": f.cpus,
                "memoryBytes": f.memory.total, "cgroup": f.cgroup,
                "swapOn": bool(f.swaps),
                "units": {u: st.active for u, st in f.units.items() if st.exists},
            })
        for section in status_sections():
            data.update(await section(s))
    finally:
        await s.close()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return 0
    t = Table("host", "address", "roles", "os", "cpu", "ram", "cgroup", box=None)
    for h in data["hosts"]:
        t.add_row(h["name"], h["address"], ",".join(h["roles"]), h["os"], str(h["cpus"]),
                  f"{h['memoryBytes'] / 1024**3:.1f} GiB", f"v{h['cgroup']}")
    console.print(t)
    for printer in status_printers():
        printer(console, data)
    return 0


def status_sections() -> list[Any]:
    return []


def status_printers() -> list[Any]:
    return []
