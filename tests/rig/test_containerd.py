"""containerd and runc as homekube installs them, on a real lab host.

The k8s-packages phase is planned by homekube against the host's real facts; the runtime's
steps (download + verify + install of the containerd tarball and runc, config.toml, the unit,
a registry's hosts.toml, start) are executed as planned, then containerd itself is asked what
it loaded, and a second plan must find nothing to change for them (facts from the stamps).

Then the CRI path a kubelet would take: `crictl` pulls the pause image from a plain-HTTP
registry through the hosts.toml homekube wrote, and runs a pod sandbox from it (runc,
cgroupfs, the OOM score clamp).

The binaries and the image are the lab's own builds (`homekube lab`'s artifact step puts
release-style `containerd/v<V>/` and `runc/v<V>/` directories with SHA256SUMS under its dist
directory, OCI blobs beside it, and crictl); they are copied onto this lab's mirror, and the
image is served by a read-only registry this test runs on the lab bridge. Settings forced by
this machine, not product defaults: the lab hosts cannot lower OOM scores (no
CAP_SYS_RESOURCE), so containerd runs at OOMScoreAdjust=0 with restrictOomScoreAdj; they boot
cgroup v1 with cgroupfs. This test sets the `native` snapshotter to prove that setting end to
end (the Kubernetes lab keeps the default overlayfs one: /var/lib/containerd is a plain-disk
bind there, since overlayfs on the hosts' overlay root fails with EINVAL).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import os
import shlex
import shutil
import threading
from collections.abc import Iterator
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
from tests.rig.helpers import run_cli, sh

pytestmark = pytest.mark.rig

DIST = Path(os.environ.get("HOMEKUBE_LAB_DIST", "/var/cache/homekube/lab-artifacts/dist"))
OCI = DIST.parent / "oci"
SOCKET = "unix:///run/containerd/containerd.sock"
PAUSE = "3.10.2"


class _Registry(http.server.BaseHTTPRequestHandler):
    """The OCI distribution API, read-only, for one image: `pause:<PAUSE>` from the lab's blobs."""

    manifest: bytes = b""

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        if path == "/v2/":
            self._send(b"{}", "application/json")
        elif path in (f"/v2/pause/manifests/{PAUSE}", f"/v2/pause/manifests/{digest}"):
            self._send(self.manifest, "application/vnd.oci.image.manifest.v1+json")
        elif path.startswith("/v2/pause/blobs/sha256:"):
            blob = OCI / "blobs" / "sha256" / path.rsplit(":", 1)[1]
            if not blob.is_file():
                self.send_error(404)
                return
            self._send(blob.read_bytes(), "application/octet-stream")
        else:
            self.send_error(404)

    do_HEAD = do_GET

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture(scope="module")
def registry(lab: hklab.Lab) -> Iterator[str]:
    """host:port of a plain-HTTP registry on the lab bridge serving the lab's pause image."""
    images = sorted((OCI / "images").glob(f"pause-{PAUSE}-*.json")) if OCI.is_dir() else []
    if not images:
        pytest.skip(f"no lab build of the pause image under {OCI}")
    manifest = json.loads(images[-1].read_text())["manifest"].split(":", 1)[1]
    handler = type("Registry", (_Registry,), {"manifest": (OCI / "blobs" / "sha256" / manifest).read_bytes()})
    srv = http.server.ThreadingHTTPServer((settings.GATEWAY4, 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"{settings.GATEWAY4}:{srv.server_address[1]}"
    finally:
        srv.shutdown()


def _release(kind: str) -> tuple[str, Path]:
    """The newest release directory of `kind` under DIST (version, path)."""
    dirs = sorted((DIST / kind).glob("v*/SHA256SUMS")) if (DIST / kind).is_dir() else []
    if not dirs:
        pytest.skip(f"no lab build of {kind} under {DIST} (built by the lab's artifact step)")
    d = dirs[-1].parent
    return d.name.removeprefix("v"), d


@pytest.fixture(scope="module")
def containerd_config(lab: hklab.Lab, lab_config: Path, registry: str,
                      tmp_path_factory: pytest.TempPathFactory) -> Path:
    ctd_version, ctd_dir = _release("containerd")
    runc_version, runc_dir = _release("runc")
    mirror = LabPaths.from_env().mirror
    for kind, d in (("containerd", ctd_dir), ("runc", runc_dir)):
        dest = mirror / kind / d.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(d, dest)
    crictl = sorted(DIST.parent.glob("cri-tools-*/crictl"))
    if not crictl:
        pytest.skip(f"no lab build of crictl beside {DIST}")
    (mirror / "tools").mkdir(exist_ok=True)
    shutil.copy2(crictl[-1], mirror / "tools" / "crictl")
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
    # lab machine: a host's root is an overlayfs, and overlayfs cannot stack on overlayfs
    snapshotter: native
""").replace('  version: "1.36"\n', "", 1)
    text = text.replace("artifacts:\n", f"""artifacts:
  imageRepository: {registry}
  registries:
  - {{host: "{registry}", plainHttp: true}}
""")
    out = tmp_path_factory.mktemp("containerd") / "containerd.yaml"
    out.write_text(text)
    return out


def runtime_resources(registry: str) -> tuple[str, ...]:
    return ("containerd install", "runc install", f"file {CONTAINERD_CONFIG}", f"file {CONTAINERD_UNIT}",
            f"file /etc/containerd/certs.d/{registry}/hosts.toml", "unit containerd.service")


async def _plan_and_apply(config: Path, *, apply: bool) -> list[Change]:
    cfg = load(config)
    registry = cfg.artifacts.registries[0].host
    wanted = runtime_resources(registry)
    s = await sess.open_session(cfg, lock=apply, phases=[KubernetesPackagesPhase()],
                                hosts=[cfg.host("h1")], enforce_preflight=False)
    try:
        plan = s.plan()
        runtime = [c for c in plan.changes if c.host == "h1" and c.resource in wanted]
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
    registry = cfg.artifacts.registries[0].host
    first = asyncio.run(_plan_and_apply(containerd_config, apply=True))
    assert [c.resource for c in first] == list(runtime_resources(registry))
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
    assert f"sandbox = '{registry}/pause:{PAUSE}'" in dump
    assert "config_path = '/etc/containerd/certs.d'" in dump
    assert "restrict_oom_score_adj = true" in dump
    assert "SystemdCgroup = false" in dump
    assert "snapshotter = 'native'" in dump
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


def test_cri_pulls_over_plain_http_and_runs_a_sandbox(
    lab: hklab.Lab, containerd_config: Path
) -> None:
    """What the kubelet does first: pull the pause image, run a pod sandbox from it."""
    cfg = load(containerd_config)
    registry = cfg.artifacts.registries[0].host
    crictl = f"/usr/local/bin/crictl --runtime-endpoint {SOCKET} --image-endpoint {SOCKET}"
    sh("h1", f"curl -fsS -o /usr/local/bin/crictl {cfg.artifacts.mirror}tools/crictl && "
             "chmod 0755 /usr/local/bin/crictl")
    try:
        # containerd was restarted with restrictOomScoreAdj off by the test above: back on
        asyncio.run(_plan_and_apply(containerd_config, apply=True))
        out = sh("h1", f"{crictl} pull {registry}/pause:{PAUSE}")
        assert "Image is up to date for sha256:" in out
        pod = {"metadata": {"name": "hk-sandbox", "namespace": "default", "uid": "hk-sandbox-1",
                            "attempt": 1},
               "log_directory": "/tmp/hk-sandbox",
               # NODE network: no CNI on this host; the runtime path is what is tested here
               "linux": {"security_context": {"namespace_options": {"network": 2}}}}
        sh("h1", f"printf '%s' {shlex.quote(json.dumps(pod))} > /tmp/hk-pod.json")
        res = hklab.host_exec("h1", f"{crictl} runp /tmp/hk-pod.json")
        assert res.returncode == 0, (res.stdout, res.stderr,
                                     hklab.host_exec("h1", "journalctl -u containerd -n 30 --no-pager").stdout)
        pod_id = res.stdout.strip()
        state = json.loads(sh("h1", f"{crictl} inspectp {pod_id}"))
        assert state["status"]["state"] == "SANDBOX_READY"
        # the sandbox asked for -998; containerd may not lower it below its own score (0)
        pid = sh("h1", "pgrep -x pause | head -n 1").strip()
        assert int(sh("h1", f"cat /proc/{pid}/oom_score_adj")) >= 0
        sh("h1", f"{crictl} stopp {pod_id} >/dev/null && {crictl} rmp {pod_id} >/dev/null")
    finally:
        hklab.host_exec("h1", f"{crictl} rmp -af >/dev/null 2>&1; rm -f /usr/local/bin/crictl "
                              "/tmp/hk-pod.json; rm -rf /tmp/hk-sandbox")


def test_reset_removes_the_containerd_homekube_installed(lab: hklab.Lab, containerd_config: Path) -> None:
    res = run_cli("reset", "--host", "h1", "--yes", "--config", str(containerd_config))
    assert res.returncode == 0, (res.stdout, res.stderr)
    left = sh("h1", "for p in /usr/local/bin/containerd /usr/local/bin/ctr /usr/local/sbin/runc "
                    "/etc/containerd /etc/systemd/system/containerd.service "
                    "/var/lib/homekube; do [ -e $p ] && echo $p; done; true")
    assert left == ""
    # the lab binds a plain disk on /var/lib/containerd (as a user's data disk would be):
    # reset empties a mounted data directory and leaves the mount itself
    assert sh("h1", "mountpoint -q /var/lib/containerd && echo mounted").strip() == "mounted"
    assert sh("h1", "ls -A /var/lib/containerd").strip() == ""
    assert sh("h1", "systemctl is-active containerd || true").strip() != "active"
