#!/usr/bin/env python3
"""Where the fact script's time goes on a host: homekube's `files` fact against a minimal
batched variant, and the etcd fact's commands one by one.

    HOMEKUBE_LAB_SLOT=6 python bench/facts_variants.py bench/results/lab1.yaml [h1]

Needs a converged lab (run `homekube apply` first). Runs over plain OpenSSH (a) the whole fact
script, (b) homekube's own `files` fact for the exact paths homekube probes, (c) a minimal
variant doing the same work in four processes (one `stat`, one `sha256sum`, one
`tar | base64`), and (d) each command of the etcd fact. Prints medians in ms measured inside
the host (`date +%s%N`), so neither SSH nor Python is counted.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

REPEAT = 7


def timed_on_host(host: str, body: str) -> float:
    from homekube.lab import rig

    script = (
        "export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        't0=$(date +%s%N)\n'
        f"( {body}\n) >/dev/null 2>&1\n"
        'echo "@@ms $(( ($(date +%s%N) - t0) / 1000 ))"\n'
    )
    r = rig.host_exec(host, "bash -s", input=script, timeout=60)
    m = re.search(r"@@ms (\d+)", r.stdout)
    if not m:
        raise SystemExit(f"{host}: no timing in output: {r.stdout[-300:]} {r.stderr[-300:]}")
    return int(m.group(1)) / 1000


def med_ms(host: str, body: str) -> float:
    return statistics.median(timed_on_host(host, body) for _ in range(REPEAT))


def batched_files(paths: dict[str, bool]) -> str:
    allp = " ".join(sorted(paths))
    plain = " ".join(sorted(p for p, secret in paths.items() if not secret))
    return (
        f"stat -c '%n\t%F\t%a\t%U\t%G\t%s' -- {allp}\n"
        f"sha256sum -- {allp}\n"
        f"tar --no-recursion -cf - -- {plain} | base64 -w0"
    )


def main() -> int:
    cfg_path = Path(sys.argv[1])
    host = sys.argv[2] if len(sys.argv) > 2 else "h1"
    from homekube.components.etcd import etcd_fact
    from homekube.components.registry import all_phases
    from homekube.config.loader import load
    from homekube.facts.system import facts_for, files
    from homekube.ops.session import probes_for

    cfg = load(cfg_path)
    probes = probes_for(cfg, cfg.host(host), all_phases())
    rows: list[tuple[str, float]] = []
    all_facts = facts_for(probes)
    rows.append(("whole fact script (all facts, as homekube sends it)",
                 med_ms(host, "\n".join(f"( {f.command}\n)" for f in all_facts))))
    rows.append((f"files fact as is ({len(probes.files)} paths)",
                 med_ms(host, files(probes.files).command)))
    rows.append(("files fact, minimal variant (stat + sha256sum + tar|base64)",
                 med_ms(host, batched_files(probes.files))))
    big = {p: s for p, s in probes.files.items() if p.startswith(("/usr/", "/usr/local/"))}
    if big:
        small = {p: s for p, s in probes.files.items() if p not in big}
        rows.append((f"files fact as is, without the {len(big)} binaries "
                     f"({', '.join(sorted(big))})", med_ms(host, files(small).command)))
        rows.append(("files fact, minimal variant, without those binaries",
                     med_ms(host, batched_files(small))))
        rows.append((f"sha256sum of those {len(big)} binaries alone",
                     med_ms(host, f"sha256sum -- {' '.join(sorted(big))}")))
    rows.append(("etcd fact as is", med_ms(host, etcd_fact(cfg).command)))
    env = "set -a; . /etc/etcd/etcdctl.env; set +a;"
    for label, cmd in (
        ("  etcd --version", "/usr/local/bin/etcd --version"),
        ("  etcdctl member list -w json", f"{env} etcdctl member list -w json"),
        ("  etcdctl endpoint status -w json", f"{env} etcdctl endpoint status -w json"),
        ("  systemctl is-active etcd", "systemctl is-active -q etcd"),
    ):
        rows.append((label, med_ms(host, cmd)))
    print(f"| on {host}, median of {REPEAT} (ms, measured on the host) | ms |")
    print("|---|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
