"""containerd and runc as homekube installs them, on a real lab host.

The k8s-packages phase is planned by homekube against the host's real facts; the runtime's
steps (download + verify + install of the containerd tarball and runc, config.toml, the unit,
a registry's hosts.toml, start) are executed as planned, then containerd itself is asked what
it loaded, and a second plan must find nothing to change for them (facts from the stamps).

The binaries are the lab's own builds (`homekube lab`'s artifact step puts release-style
`containerd/v<V>/` and `runc/v<V>/` directories with SHA256SUMS under its dist directory);
they are copied onto this lab's mirror. Settings forced by this machine, not product
defaults: the lab hosts cannot lower OOM scores (no CAP_SYS_RESOURCE), so containerd runs
at OOMScoreAdjust=0 with restrictOomScoreAdj; they boot cgroup v1 with cgroupfs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from homekube import lab as hklab
from homekube.components.kubernetes import KubernetesPackagesPhase, kube_facts
from homekube.config.loader import load
from homekube.lab import settings
from homekube.lab.settings import LabPaths
from homekube.ops import session as sess
from homekube.plan.model import Change, PhasePlan, Plan
from homekube.render.runtime import CONTAINERD_CONFIG, CONTAINERD_UNIT
from tests.rig.conftest import run_cli

pytestmark = pytest.mark.rig

DIST = Path(os.environ.get("HOMEKUBE_LAB_DIST", "/var/cache/homekube/lab-artifacts/dist"))
REGISTRY = f"{settings.GATEWAY4}:5000"


def _release(kind: str) -> tuple[str, Path]:
    """The newest release directory of `kind` under DIST (version, path)."""
    dirs = sorted((DIST / kind).glob("v*/SHA256SUMS")) if (DIST / kind).is_dir() else []
    if not dirs:
        pytest.skip(f"no lab build of {kind} under {DIST} (built by the lab's artifact step)")
    d = dirs[-1].parent
    return d.name.removeprefix("v"), d


@pytest.fixture(scope="module")
def containerd_config(lab: hklab.Lab, lab_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ctd_version, ctd_dir = _release("containerd")
    runc_version, runc_dir = _release("runc")
    mirror = LabPaths.from_env().mirror
    for kind, d in (("containerd", ctd_dir), ("runc", runc_dir)):
        dest = mirror / kind / d.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(d, dest)
    text = lab_config.read_text()
    text = text.replace("  enabled: false\n", f"""\
  enabled: true
  version: "1.36.3"
  runtime: containerd
  # lab machine: cgroup v1 hosts without a systemd-managed cgroup tree for pods
  cgroupDriver: cgroupfs
  allowCgroupV1: true
  containerd:
    version: {ctd_version}
    runcVersion: {runc_version}
    # lab machine: no process may lower its OOM score (no CAP_SYS_RESOURCE)
    restrictOomScoreAdj: true
    oomScoreAdjust: 0
""").replace('  version: "1.36"\n', "", 1)
    text = text.replace("artifacts:\n", f"""artifacts:
  imageRepository: {REGISTRY}
  registries:
  - {{host: "{REGISTRY}", plainHttp: true}}
""")
    out = tmp_path_factory.mktemp("containerd") / "containerd.yaml"
    out.write_text(text)
    return out


def sh(name: str, cmd: str) -> str:
    res = hklab.host_exec(name, cmd)
    assert res.returncode == 0, (name, cmd, res.stderr)
    return res.stdout


RUNTIME = ("containerd install", "runc install", f"file {CONTAINERD_CONFIG}", f"file {CONTAINERD_UNIT}",
           f"file /etc/containerd/certs.d/{REGISTRY}/hosts.toml", "unit containerd.service")


async def _plan_and_apply(config: Path, *, apply: bool) -> list[Change]:
    cfg = load(config)
    s = await sess.open_session(cfg, lock=apply, phases=[KubernetesPackagesPhase()],
                                hosts=[cfg.host("h1")], enforce_preflight=False)
    try:
        plan = s.plan()
        runtime = [c for c in plan.changes if c.host == "h1" and c.resource in RUNTIME]
        if apply and runtime:
            sub = Plan(plan.cluster, ["h1"], [PhasePlan("k8s-packages", "runtime", tuple(runtime))])
            res = await s.apply(sub)
            assert res.ok, res
        facts = kube_facts(s.facts["h1"])
        assert facts.kubeadm is None  # nothing else of Kubernetes is installed by this test
        return runtime
    finally:
        await s.close()


def test_containerd_installs_starts_with_our_config_and_converges(
    lab: hklab.Lab, containerd_config: Path
) -> None:
    cfg = load(containerd_config)
    first = asyncio.run(_plan_and_apply(containerd_config, apply=True))
    assert [c.resource for c in first] == list(RUNTIME)
    # containerd runs the version we installed, from /usr/local/bin, with the CRI plugin
    version = sh("h1", "ctr version")
    assert f"Version:  v{cfg.kubernetes.containerd.version}" in version.split("Server:")[1]
    assert sh("h1", "readlink -f /proc/$(systemctl show -p MainPID --value containerd)/exe").strip() == (
        "/usr/local/bin/containerd")
    plugins = sh("h1", "ctr plugins ls")
    assert any(line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and line.split()[-1] == "ok"
               for line in plugins.splitlines()), plugins
    # what containerd made of config.toml: the values homekube wrote, nothing dropped
    dump = sh("h1", "containerd config dump")
    assert f"sandbox = '{REGISTRY}/pause:3.10.2'" in dump
    assert "config_path = '/etc/containerd/certs.d'" in dump
    assert "restrict_oom_score_adj = true" in dump
    assert "SystemdCgroup = false" in dump
    assert "BinaryName = '/usr/local/sbin/runc'" in dump
    assert sh("h1", "/usr/local/sbin/runc --version").startswith(
        f"runc version {cfg.kubernetes.containerd.runc_version}")
    assert sh("h1", "systemctl show -p OOMScoreAdjust --value containerd").strip() == "0"
    # a second plan finds the runtime converged: versions come from the stamps, files match
    assert asyncio.run(_plan_and_apply(containerd_config, apply=False)) == []
    stamp = sh("h1", "cat /var/lib/homekube/containerd-binary").split()
    assert stamp[-1] == cfg.kubernetes.containerd.version
    # a changed setting rewrites config.toml and restarts containerd; then it converges again
    changed = containerd_config.with_name("changed.yaml")
    changed.write_text(containerd_config.read_text().replace("restrictOomScoreAdj: true",
                                                             "restrictOomScoreAdj: false"))
    pid = sh("h1", "systemctl show -p MainPID --value containerd").strip()
    again = asyncio.run(_plan_and_apply(changed, apply=True))
    assert [c.resource for c in again] == [f"file {CONTAINERD_CONFIG}", "unit containerd.service"]
    assert "restrict_oom_score_adj = false" in sh("h1", "containerd config dump")
    assert sh("h1", "systemctl show -p MainPID --value containerd").strip() != pid
    assert asyncio.run(_plan_and_apply(changed, apply=False)) == []


def test_reset_removes_the_containerd_homekube_installed(lab: hklab.Lab, containerd_config: Path) -> None:
    res = run_cli("reset", "--host", "h1", "--yes", "--config", str(containerd_config))
    assert res.returncode == 0, (res.stdout, res.stderr)
    left = sh("h1", "for p in /usr/local/bin/containerd /usr/local/bin/ctr /usr/local/sbin/runc "
                    "/etc/containerd /etc/systemd/system/containerd.service /var/lib/containerd "
                    "/var/lib/homekube; do [ -e $p ] && echo $p; done; true")
    assert left == ""
    assert sh("h1", "systemctl is-active containerd || true").strip() != "active"
