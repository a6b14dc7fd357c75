"""One lab of three real hosts for the whole session (booting one costs ~3 s, building ~70 s).

`down()` first clears whatever a crashed earlier run left; `down()` at the end leaves the
machine as it was (the base image, key, mirror and Debian repository stay cached for the next run).
Tests that need a pristine server should not mutate shared state they cannot undo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homekube import lab as hklab


@pytest.fixture(scope="session")
def _lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the lab needs root on Linux (network namespaces, systemd-nspawn)")
    config = tmp_path_factory.mktemp("lab") / "homekube-lab.yaml"
    hklab.down()
    lab = hklab.up(3, config_path=config)
    try:
        yield lab, config
    finally:
        hklab.down()


@pytest.fixture(scope="session")
def lab(_lab_session: tuple[hklab.Lab, Path]) -> hklab.Lab:
    """Hosts h1..h3, up and ready (sshd accepts the lab key, systemd finished booting)."""
    return _lab_session[0]


@pytest.fixture(scope="session")
def lab_config(_lab_session: tuple[hklab.Lab, Path]) -> Path:
    """The cluster.yaml that `up` wrote for the session's lab."""
    return _lab_session[1]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "homekube", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


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


def plan_json(config: Path) -> dict[str, Any]:
    res = run_cli("plan", "--config", str(config), "--output", "json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.fixture()
def fresh_lab(tmp_path: Path) -> Iterator[tuple[hklab.Lab, Path]]:
    """Three brand-new hosts for a test that needs pristine servers (~3 s)."""
    hklab.down()
    config = tmp_path / "homekube-lab.yaml"
    lab = hklab.up(3, config_path=config)
    yield lab, config
