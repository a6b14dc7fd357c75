"""What every rig test module uses: commands on lab hosts, the CLI, derived configs, polling.

Every host exec is bounded (`HOST_TIMEOUT` unless a call says otherwise), so a hung command
fails its test instead of the whole session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homekube import lab as hklab

#: seconds a host command may take: host_exec's own default, and the longest any copy used
HOST_TIMEOUT = 300.0


def run_on(host: str, cmd: str, *, ok: bool = True, input: str | None = None,
           timeout: float = HOST_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `cmd` on lab host `host`; with `ok`, fail the test (with its output) unless it exits 0."""
    res = hklab.host_exec(host, cmd, input=input, timeout=timeout)
    if ok:
        assert res.returncode == 0, (f"{host}: {cmd!r} -> {res.returncode}\n"
                                     f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def sh(host: str, cmd: str, *, ok: bool = True, input: str | None = None,
       timeout: float = HOST_TIMEOUT) -> str:
    """`run_on`, for its stdout."""
    return run_on(host, cmd, ok=ok, input=input, timeout=timeout).stdout


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "homekube", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def cli(*args: str, timeout: float = 600) -> str:
    """`run_cli` that must succeed; its stdout."""
    res = run_cli(*args, timeout=timeout)
    assert res.returncode == 0, f"homekube {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def plan_json(config: Path) -> dict[str, Any]:
    res = run_cli("plan", "--config", str(config), "--output", "json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def write_config(base: Path, dest: Path, *, etcd_hosts: tuple[str, ...] = ("h1",),
                 replace: dict[str, str] | None = None, hosts: int | None = None) -> Path:
    """Derive a cluster.yaml from the lab's: give `etcd_hosts` the etcd role, apply edits."""
    text = base.read_text()
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith("- {name: h"):
            name = line.split("name: ")[1].split(",")[0]
            if hosts is not None and int(name[1:]) > hosts:
                continue
            roles = ["control-plane"] if name == "h1" else []
            if name in etcd_hosts:
                roles.append("etcd")
            roles.append("worker")
            line = line.split("roles:")[0] + f"roles: [{', '.join(roles)}]}}"
        lines.append(line)
    out = "\n".join(lines) + "\n"
    for old, new in (replace or {}).items():
        assert old in out, old
        out = out.replace(old, new)
    dest.write_text(out)
    return dest


def wait_for(what: str, check: Callable[[], bool], *, seconds: float = 180, every: float = 1.0) -> None:
    """Poll `check` until it holds; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {seconds:.0f} s")
        time.sleep(every)


def wait_ok(host: str, cmd: str, *, seconds: float = 60) -> None:
    """Poll until `cmd` exits 0 on `host`."""
    wait_for(f"{host}: `{cmd}` succeeds", lambda: run_on(host, cmd, ok=False).returncode == 0,
             seconds=seconds, every=0.3)
