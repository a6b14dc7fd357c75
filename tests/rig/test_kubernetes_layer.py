"""The Kubernetes layer on real hosts: what can run here runs, what cannot stops honestly.

Nothing on this machine can run kubeadm, a kubelet, CRI-O or Calico, and its lab hosts boot
cgroup v1, which kubelet ≥ 1.35 refuses. So with `kubernetes.enabled: true`:

* a plain `plan`/`apply` is refused by preflight (cgroup v1) before any host is touched — the
  honest answer for these hosts, asserted as such;
* to check everything after preflight, some tests run the CLI in-process with preflight's
  cgroup v1 finding filtered out (``assume_cgroup2``). That switch exists only in this file:
  homekube itself has no option to skip the check, because a real cgroup v1 host would just
  get a kubelet that never starts;
* `artifacts.mirror` is the lab mirror, which lacks the Kubernetes artifacts, so apply stops
  at the artifact check with one message naming them — and no test sends traffic outside the
  lab (the lab's nft table would drop it anyway).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homekube import lab as hklab
from homekube.components.kubernetes import INIT_CONFIG, JOIN_CONFIG, kube_facts
from homekube.config.loader import load
from homekube.kube import forward_port
from homekube.ops import session as sess
from homekube.render.kubernetes import REDACTED_TOKEN
from homekube.transport.ssh import SshTransport
from tests.rig.helpers import run_cli, sh

pytestmark = pytest.mark.rig

TOKEN_RE = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
CGROUP_V1 = "cgroup v1: kubelet ≥ 1.35 refuses to start on cgroup v1"


@pytest.fixture(scope="module")
def layer_on(lab: hklab.Lab, lab_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's cluster.yaml with the Kubernetes layer on; artifacts from the lab mirror."""
    text = lab_config.read_text()
    assert "  enabled: false\n" in text
    assert f"mirror: {hklab.current().mirror_url}" in text  # never upstream from a test
    on = tmp_path_factory.mktemp("k8s") / "layer-on.yaml"
    on.write_text(text.replace("  enabled: false\n", "  enabled: true\n"))
    return on


@pytest.fixture()
def assume_cgroup2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Test-only: drop preflight's cgroup v1 refusal (see the module docstring)."""
    real = sess.preflight

    def preflight(cfg, host, facts):  # type: ignore[no-untyped-def]
        return [f for f in real(cfg, host, facts) if not f.message.startswith("cgroup v1")]

    monkeypatch.setattr(sess, "preflight", preflight)
    yield


def cli(*args: str) -> tuple[int, str]:
    """The CLI in-process (so `assume_cgroup2` applies); returns (exit code, all output)."""
    from homekube.cli.main import app

    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


KUBERNETES_PATHS = (
    "/etc/apt/sources.list.d/kubernetes.list", "/etc/apt/sources.list.d/cri-o.list",
    "/etc/apt/keyrings/kubernetes-apt-keyring.gpg", "/etc/apt/keyrings/cri-o-apt-keyring.gpg",
    "/etc/crio", "/etc/kubernetes/homekube", "/run/homekube", "/usr/bin/kubeadm",
    "/usr/bin/kubelet", "/usr/bin/crio", "/etc/kubernetes/pki/ca.key",
)


def nothing_of_kubernetes(lab: hklab.Lab) -> None:
    for h in lab.hosts:
        out = sh(h.name, f"for p in {' '.join(KUBERNETES_PATHS)}; do "
                         '[ -e "$p" ] && echo "$p"; done; true')
        assert out == "", (h.name, out)


def test_layer_on_is_refused_on_cgroup_v1_before_anything(lab: hklab.Lab, layer_on: Path) -> None:
    for verb in ("plan", "apply"):
        res = run_cli(verb, "--config", str(layer_on))
        assert res.returncode == 3, (verb, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
        for h in lab.hosts:
            assert f"{h.name}: {CGROUP_V1}" in res.stderr
        assert "nothing was changed" in res.stderr
    nothing_of_kubernetes(lab)


def test_plan_shows_the_kubernetes_phases_with_exact_commands_and_files(
    lab: hklab.Lab, layer_on: Path, assume_cgroup2: None
) -> None:
    mirror = hklab.current().mirror_url
    code, text = cli("plan", "--config", str(layer_on), "-v")  # -v: the exact commands and files
    assert code == 0, text
    for expected in (
        "k8s-packages", "kubeadm", "calico", "ui",
        "check that 7 artifact(s) can be fetched",
        f"set -- '{mirror}kubernetes/v1.36/deb/Release.key'",
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
        f"{mirror}kubernetes/v1.36/deb/ /",
        "write /etc/crio/crio.conf.d/10-homekube.conf",
        "apt-mark hold 'cri-o' 'kubelet' 'kubeadm' 'kubectl'",
        "create the Kubernetes cluster CA (CN kubernetes)",
        f"kubeadm init --config {INIT_CONFIG} --skip-token-print --skip-certificate-key-print",
        f"kubeadm join --config {JOIN_CONFIG} (worker)",
        "kubectl --kubeconfig=/etc/kubernetes/admin.conf apply --server-side "
        "--field-manager=homekube --force-conflicts -f /etc/kubernetes/homekube/calico/v3.32.1/"
        "v1_crd_projectcalico_org.yaml",
        "+  name: headlamp-view",
        f"+- token: {REDACTED_TOKEN}",
    ):
        assert expected in text, expected
    # the only token-shaped strings in the plan are the placeholders
    assert set(TOKEN_RE.findall(text)) == {REDACTED_TOKEN}

    code, out = cli("plan", "--config", str(layer_on), "--output", "json")
    assert code == 0, out
    plan = json.loads(out)
    assert plan["phases"][-7:-1] == ["k8s-packages", "endpoint", "kubeadm", "calico", "flannel", "ui"]
    assert plan["phases"][-1] == "remove"  # hosts dropped from cluster.yaml are cleaned last
    h1 = {c["resource"]: c for c in plan["hosts"]["h1"]["changes"] if c["phase"] == "kubeadm"}
    init_wave = h1["kubeadm init"]["wave"]
    for w in ("h2", "h3"):
        (join,) = [c for c in plan["hosts"][w]["changes"] if c["phase"] == "kubeadm"]
        assert join["wave"] > init_wave
        assert f"kubeadm join --config {JOIN_CONFIG}" in " ".join(join["actions"])
    assert set(TOKEN_RE.findall(out)) == {REDACTED_TOKEN}


def test_apply_stops_at_the_artifact_check_after_host_prep_and_etcd(
    lab: hklab.Lab, layer_on: Path, assume_cgroup2: None
) -> None:
    mirror = hklab.current().mirror_url
    code, text = cli("apply", "--config", str(layer_on))
    assert code == 1, text
    assert "Traceback" not in text
    # one message, from the first control plane, naming what the mirror lacks: the
    # Kubernetes repository is there once the lab's artifacts were published (test_artifacts
    # runs first in a full session), cri-o's and Calico's never are
    published = (lab.dir / "mirror/kubernetes/v1.36/deb/InRelease").is_file()
    missing = ([] if published else ["kubernetes/v1.36/deb/Release.key", "kubernetes/v1.36/deb/InRelease"]) + [
        "cri-o/v1.36/deb/Release.key", "cri-o/v1.36/deb/InRelease",
        "calico/v3.32.1/v1_crd_projectcalico_org.yaml", "calico/v3.32.1/tigera-operator.yaml",
        "calico/v3.32.1/SHA256SUMS",
    ]  # fmt: skip
    fetch = [ln for ln in text.splitlines() if ln.startswith("cannot fetch ")]
    assert fetch == [f"cannot fetch {mirror}{missing[0]} (and {len(missing) - 1} more): "
                     "HTTP 404, not on the mirror"], text
    for m in missing[1:]:
        assert f"  {mirror}{m}: HTTP 404, not on the mirror" in text
    assert "error: h1: k8s-packages / check that 7 artifact(s) can be fetched" in text
    # every URL it could not fetch is on the lab mirror
    tried = [w.rstrip(":") for ln in text.splitlines()
             if ln.startswith(("cannot fetch ", "  http")) for w in ln.split() if "://" in w]
    assert sorted(tried) == sorted(f"{mirror}{m}" for m in missing), tried
    # host preparation and etcd were applied before it stopped ...
    assert sh("h1", "systemctl is-active etcd").strip() == "active"
    for h in lab.hosts:
        assert "net.ipv4.ip_forward = 1" in sh(h.name, "cat /etc/sysctl.d/90-homekube.conf")
    # ... and nothing of the Kubernetes layer
    nothing_of_kubernetes(lab)
    # a rerun stops at the same place, with host prep and etcd already converged
    code, again = cli("apply", "--config", str(layer_on))
    assert code == 1 and "cannot fetch" in again
    assert "Host preparation" not in again and "etcd service" not in again, again


def test_layer_off_apply_exits_0(lab: hklab.Lab, lab_config: Path) -> None:
    res = run_cli("apply", "--config", str(lab_config))
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli("plan", "--config", str(lab_config), "--output", "json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    for h in lab.names:
        off = [u for u in plan["hosts"][h]["unchanged"]
               if u["phase"] in ("k8s-packages", "kubeadm", "calico", "ui")]
        assert {u["reason"] for u in off} == {"Kubernetes layer is off in cluster.yaml"}
        assert len(off) == 4


def test_facts_of_the_layer_cost_no_extra_exec(lab: hklab.Lab, layer_on: Path) -> None:
    cfg = load(layer_on)

    async def go() -> dict[str, int]:
        s = await sess.open_session(cfg, lock=False, enforce_preflight=False)
        try:
            assert all(kube_facts(f).readyz is None and kube_facts(f).kubeadm is None
                       for f in s.facts.values())
            return {h: t.execs for h, t in s.transports.items()}
        finally:
            await s.close()

    assert asyncio.run(go()) == {h: 1 for h in lab.names}


def test_status_kubeconfig_and_render_with_the_layer_on(
    lab: hklab.Lab, layer_on: Path, tmp_path: Path
) -> None:
    res = run_cli("status", "--config", str(layer_on))
    assert res.returncode == 0, res.stderr
    assert "kubernetes 1.36" in res.stdout
    assert "kubernetes API: not answering (or not initialised yet)" in res.stdout
    res = run_cli("kubeconfig", "--config", str(layer_on), "--out", str(tmp_path / "kc"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    want = "no control plane has an admin kubeconfig: h1: no /etc/kubernetes/admin.conf"
    assert want in res.stderr
    assert not (tmp_path / "kc").exists()
    res = run_cli("render", "--config", str(layer_on), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "h1" / INIT_CONFIG.lstrip("/")).is_file()
    assert (tmp_path / "r" / "h2" / JOIN_CONFIG.lstrip("/")).is_file()
    assert (tmp_path / "r" / "cluster" / "headlamp.yaml").is_file()


def test_api_tunnel_is_an_ssh_forwarded_local_port(lab: hklab.Lab, lab_config: Path) -> None:
    """kube.forward_port on a real host: a local port whose far end is h1's 127.0.0.1:22."""
    cfg = load(lab_config)

    async def go() -> bytes:
        t = await SshTransport.connect(sess.ssh_target(cfg, cfg.host("h1")))
        try:
            async with forward_port(t, "127.0.0.1", 22) as port:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                banner = await asyncio.wait_for(reader.readline(), 10)
                writer.close()
                await writer.wait_closed()
                return banner
        finally:
            await t.close()

    assert asyncio.run(go()).startswith(b"SSH-2.0-")
