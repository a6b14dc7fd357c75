#!/usr/bin/env python3
"""Stress the lab's fresh bring-up, run by hand: does any apply hang or fail? (issue 10)

    HOMEKUBE_LAB_SLOT=6 .venv/bin/python bench/stress_lab.py [--runs 30] [--apply-timeout 300]

Each run: `homekube lab down`, a fresh 3-host `lab up`, `homekube apply` of the lab config
with h1, h2 and h3 all etcd members (host prep with its Debian packages + a 3-member TLS
etcd), then `homekube plan -o json`, which must report 0 changes. Every command is bounded;
one that exceeds its bound is killed with everything it started and the run counts as a
failure naming the run and the step (a hang). Prints per-run times, the median and the
slowest run, and writes bench/results/stress-latest.json. Exit 1 when any run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
HOMEKUBE = str(Path(sys.executable).parent / "homekube")
APPLIED_RE = re.compile(r"applied (\d+) change\(s\) on (\d+) host\(s\) in ([\d.]+)s")
HOSTS = ("h1", "h2", "h3")


class StepFailed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.hang = "did not finish within" in message


@dataclass
class Run:
    index: int
    ok: bool = False
    lab_up_s: float | None = None
    apply_s: float | None = None
    plan_s: float | None = None
    total_s: float | None = None
    changes: int | None = None
    failure: str | None = None
    hang: bool = False
    detail: str = ""


@dataclass
class Report:
    started: str
    slot: str
    runs: list[Run] = field(default_factory=list)


def cmd(argv: list[str], step: str, timeout: float) -> tuple[str, float]:
    """Run argv in its own session; returns (stdout, seconds). Kills the session on timeout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "COLUMNS": "200"})
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise StepFailed(step, f"did not finish within {timeout:.0f} s (killed); output ends:\n"
                         + "\n".join((out + err).strip().splitlines()[-15:])) from None
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise StepFailed(step, f"exit {p.returncode}:\n"
                         + "\n".join((out + err).strip().splitlines()[-20:]))
    return out, wall


def etcd_everywhere(cfg: Path) -> None:
    """h1..h3 all etcd members, as tests/rig/conftest.py write_config(etcd_hosts=...) does."""
    lines, members = [], set()
    for line in cfg.read_text().splitlines():
        m = re.match(r"(\s*- \{name: (\w+),.*roles: \[)([^\]]*)(\]\})$", line)
        if m and m.group(2) in HOSTS:
            if "etcd" not in m.group(3).split(", "):
                line = f"{m.group(1)}etcd, {m.group(3)}{m.group(4)}"
            members.add(m.group(2))
        lines.append(line)
    if members != set(HOSTS):
        raise SystemExit(f"could not give {', '.join(HOSTS)} the etcd role in {cfg}")
    cfg.write_text("\n".join(lines) + "\n")


def one_run(i: int, cfg: Path, apply_timeout: float) -> Run:
    r = Run(i)
    t0 = time.perf_counter()
    try:
        cmd([HOMEKUBE, "lab", "down"], "lab down", 240)
        _, r.lab_up_s = cmd([HOMEKUBE, "lab", "up", str(len(HOSTS)), "--config", str(cfg)],
                            "lab up", 600)
        etcd_everywhere(cfg)
        out, r.apply_s = cmd([HOMEKUBE, "apply", "-c", str(cfg)], "apply", apply_timeout)
        m = APPLIED_RE.search(out)
        r.changes = int(m.group(1)) if m else None
        out, r.plan_s = cmd([HOMEKUBE, "plan", "-c", str(cfg), "-o", "json"], "second plan", 120)
        left = json.loads(out).get("changes")
        if left != 0:
            raise StepFailed("second plan", f"{left} change(s) left after apply")
        r.ok = True
    except StepFailed as e:
        r.failure, r.hang = e.step, e.hang
        r.detail = str(e)
    r.total_s = time.perf_counter() - t0
    return r


def fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def summary(rep: Report) -> str:
    ok = [r for r in rep.runs if r.ok]
    bad = [r for r in rep.runs if not r.ok]
    applies = [r.apply_s for r in ok if r.apply_s is not None]
    ups = [r.lab_up_s for r in rep.runs if r.lab_up_s is not None]
    lines = [
        f"stress: {len(rep.runs)} run(s) in slot {rep.slot} from {rep.started}: {len(ok)} ok, "
        f"{len(bad)} failed ({sum(r.hang for r in bad)} hang(s))",
        "",
        "| run | lab up s | apply s | changes | plan s | total s | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rep.runs:
        res = "ok" if r.ok else f"FAILED: {r.failure}{' (hang)' if r.hang else ''}"
        lines.append(f"| {r.index} | {fmt(r.lab_up_s)} | {fmt(r.apply_s)} | "
                     f"{r.changes if r.changes is not None else '—'} | {fmt(r.plan_s)} | "
                     f"{fmt(r.total_s)} | {res} |")
    if applies:
        slow = max((r for r in ok if r.apply_s is not None), key=lambda r: r.apply_s or 0)
        lines += [
            "",
            f"apply: median {statistics.median(applies):.1f} s, min {min(applies):.1f} s, "
            f"slowest {max(applies):.1f} s (run {slow.index}); lab up: median "
            f"{statistics.median(ups):.1f} s, slowest {max(ups):.1f} s",
        ]
    for r in bad:
        lines.append(f"run {r.index} FAILED at {r.failure}: {r.detail}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--apply-timeout", type=float, default=300.0,
                    help="seconds one apply may take before the run counts as a hang")
    ap.add_argument("--config", type=Path, default=RESULTS / "stress-lab.yaml")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    slot = os.environ.get("HOMEKUBE_LAB_SLOT", "")
    if slot in ("", "0"):
        raise SystemExit("set HOMEKUBE_LAB_SLOT to a slot of your own (slot 0 is the lead's)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rep = Report(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), slot)
    out = RESULTS / "stress-latest.json"
    try:
        for i in range(1, args.runs + 1):
            r = one_run(i, args.config, args.apply_timeout)
            rep.runs.append(r)
            print(f"run {i}/{args.runs}: "
                  + (f"ok, lab up {fmt(r.lab_up_s)} s, apply {fmt(r.apply_s)} s "
                     f"({r.changes} changes), plan {fmt(r.plan_s)} s" if r.ok
                     else f"FAILED at {r.failure}: {r.detail}"), flush=True)
            out.write_text(json.dumps(asdict(rep), indent=1) + "\n")
    finally:
        with contextlib.suppress(StepFailed):
            cmd([HOMEKUBE, "lab", "down"], "lab down", 240)
    print()
    print(summary(rep))
    return 0 if all(r.ok for r in rep.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
