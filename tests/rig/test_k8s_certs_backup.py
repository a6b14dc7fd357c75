"""Certificates and backups on a real kubeadm cluster (Kubernetes 1.36, external TLS etcd 3.6).

One host with every role for the module (`lab up 1 --kubernetes`, then `homekube apply`), with
a backup timer firing every 20 s. One control plane is enough to show the renewal keeps the
API up: kube-apiserver is never restarted (it reloads its certificates from disk), so a
second control plane would only repeat the same turn; `kubeadm_renewals` orders them one at a
time and the unit tests check that order.

Figures are printed (run with `-s`): renewal duration, failed / total API calls during it,
and excerpts of `status`.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from homekube import lab as hklab
from homekube.kube import parse_kubeconfig
from homekube.pki.spec import cert_info
from tests.rig.helpers import cli, plan_json, run_cli, sh, wait_for

pytestmark = pytest.mark.rig

KUBECTL = "kubectl --kubeconfig=/etc/kubernetes/admin.conf"
#: every 20 s: "older than twice the schedule" is reached 40 s after the timer stops
SCHEDULE = "*:*:0/20"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(cluster.yaml, its directory) of a 1-host cluster with every role and a backup timer."""
    d = tmp_path_factory.mktemp("k8scerts")
    config = d / "cluster.yaml"
    hklab.down()
    try:
        lab = hklab.up(1, config_path=config, kubernetes=True)
        text = config.read_text()
        assert "  install: tarball\n" in text
        config.write_text(text.replace(
            "  install: tarball\n",
            f"  install: tarball\n  backup: {{schedule: '{SCHEDULE}', keep: 3}}\n"))
        t0 = time.monotonic()
        res = run_cli("apply", "--config", str(config), "--quiet", timeout=1500)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        print(f"\n[k8s-certs] apply (1 host, Kubernetes + etcd + backup timer): "
              f"{time.monotonic() - t0:.1f}s")
        assert plan_json(config)["changes"] == 0
        assert lab.hosts
        yield config, d
    finally:
        hklab.down()


def status_json(config: Path) -> dict[str, Any]:
    res = run_cli("status", "--config", str(config), "--output", "json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return dict(json.loads(res.stdout))


def certs_json(config: Path) -> dict[str, Any]:
    return dict(json.loads(cli("certs", "--config", str(config), "--output", "json")))


def pid(name: str) -> str:
    # -f: kube-controller-manager is longer than the 15 characters of a process name
    return sh("h1", f"pgrep -of '^{name}( |$)'").strip()


# ---------------------------------------------------------------------------------------------
# a client that keeps calling the API


class ApiCaller:
    """Calls GET /api/v1/namespaces every ~150 ms on a new TLS connection (so every call
    sees the serving certificate of that moment) with a kubeconfig's client certificate."""

    def __init__(self, kubeconfig: Path) -> None:
        kc = parse_kubeconfig(kubeconfig.read_text())
        cluster = kc["clusters"][0]["cluster"]
        user = kc["users"][0]["user"]
        self.url = cluster["server"]
        self._dir = tempfile.TemporaryDirectory()
        d = Path(self._dir.name)
        (d / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        (d / "c.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (d / "c.key").write_bytes(base64.b64decode(user["client-key-data"]))
        (d / "c.key").chmod(0o600)
        self.ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        self.ctx.load_cert_chain(str(d / "c.crt"), str(d / "c.key"))
        m = re.fullmatch(r"https://\[?([^\]]+?)\]?:(\d+)", self.url)
        assert m, self.url
        self.host, self.port = m.group(1), int(m.group(2))
        self.ok = 0
        self.failed: list[str] = []
        self.serials: list[str] = []  # the serving certificate's serial, as it changes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def call(self) -> None:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=5)
        try:
            conn.request("GET", "/api/v1/namespaces?limit=5")
            resp = conn.getresponse()
            body = resp.read()
            sock = conn.sock
            der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
            if resp.status != 200 or b'"NamespaceList"' not in body:
                self.failed.append(f"HTTP {resp.status}: {body[:120]!r}")
                return
            self.ok += 1
            if der:
                from cryptography import x509

                serial = f"{x509.load_der_x509_certificate(der).serial_number:x}"
                if not self.serials or self.serials[-1] != serial:
                    self.serials.append(serial)
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            self.failed.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.call()
            self._stop.wait(0.15)

    def __enter__(self) -> ApiCaller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._dir.cleanup()

    @property
    def total(self) -> int:
        return self.ok + len(self.failed)


# ---------------------------------------------------------------------------------------------
# listing


def test_certs_lists_kubeadm_kubelet_etcd_and_handed_out_kubeconfigs(
        cluster: tuple[Path, Path]) -> None:
    config, d = cluster
    kc = d / "admin.kubeconfig"
    out = cli("kubeconfig", "--config", str(config), "--out", str(kc))
    assert re.search(r"expires \d{4}-\d\d-\d\d \d\d:\d\d UTC, in 36[45] days", out), out
    data = certs_json(config)
    rows = {(c["host"], c.get("name")): c for c in data["certs"]}
    for name in ("apiserver", "apiserver-kubelet-client", "front-proxy-client", "admin.conf",
                 "super-admin.conf", "controller-manager.conf", "scheduler.conf"):
        c = rows[("h1", name)]
        assert c["group"] == "kubeadm" and 363 <= c["daysLeft"] <= 365, c
    for name in ("ca", "front-proxy-ca", "etcd/ca"):
        assert rows[("h1", name)]["group"] == "ca" and rows[("h1", name)]["daysLeft"] > 3600
    assert rows[("h1", "kubelet-client")]["cn"] == "system:node:h1"
    assert rows[("h1", "kubelet-serving")]["group"] == "kubelet"
    assert rows[("h1", "etcd/server")]["group"] == "etcd"
    # the kubeconfig `homekube kubeconfig` wrote is recorded, with its certificate's expiry
    handed = rows[("(local)", "kubeconfig lab")]
    assert handed["path"] == str(kc) and handed["group"] == "kubeconfig"
    assert handed["serial"] == rows[("h1", "admin.conf")]["serial"]
    assert data["warnings"] == []
    # the key stays on the host: nothing key-like came back
    assert "PRIVATE KEY" not in json.dumps(data)
    text = cli("certs", "--config", str(config))
    assert "admin.conf" in text and "kubelet-client" in text and "kubeconfig lab" in text


def test_kubeconfig_merges_under_a_named_context_and_keeps_a_backup(
        cluster: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = cluster
    target = tmp_path / "kube" / "config"
    target.parent.mkdir()
    target.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: other, cluster: "
                      "{server: 'https://192.0.2.1:6443'}}]\nusers: [{name: u, user: {token: t}}]\n"
                      "contexts: [{name: other, context: {cluster: other, user: u}}]\n"
                      "current-context: other\n")
    out = cli("kubeconfig", "--config", str(config), "--merge", "--context", "hk",
              "--out", str(target))
    assert "merged context hk" in out and "expires" in out, out
    backups = list(target.parent.glob("config.homekube-*.bak"))
    assert len(backups) == 1 and "192.0.2.1" in backups[0].read_text()
    merged = parse_kubeconfig(target.read_text())
    assert target.stat().st_mode & 0o777 == 0o600
    assert {c["name"] for c in merged["contexts"]} == {"other", "hk"}
    assert merged["current-context"] == "other"  # an existing choice is kept
    # the merged context works against the real API
    got = json.loads(sh("h1", "cat > /tmp/hk.kubeconfig && kubectl --kubeconfig /tmp/hk.kubeconfig "
                              "--context hk get --raw /api/v1/namespaces/default",
                        input=target.read_text()))
    sh("h1", "rm -f /tmp/hk.kubeconfig")
    assert got["metadata"]["name"] == "default"
    # merging again replaces the entries of the same name, nothing is duplicated
    cli("kubeconfig", "--config", str(config), "--merge", "--context", "hk", "--out", str(target))
    again = parse_kubeconfig(target.read_text())
    assert sorted(c["name"] for c in again["contexts"]) == ["hk", "other"]


# ---------------------------------------------------------------------------------------------
# renewal under load


SHORT = rf"""
set -eu
{KUBECTL} -n kube-system get cm kubeadm-config -o jsonpath='{{.data.ClusterConfiguration}}' > /root/short.yaml
sed -i 's/^certificateValidityPeriod: .*/certificateValidityPeriod: 72h0m0s/' /root/short.yaml
grep -q '^certificateValidityPeriod: 72h0m0s' /root/short.yaml || echo 'certificateValidityPeriod: 72h0m0s' >> /root/short.yaml
kubeadm certs renew all --config /root/short.yaml > /root/short.log 2>&1
"""


@pytest.mark.timeout(900)
def test_short_lived_kubeadm_certs_renewed_while_a_client_keeps_calling(
        cluster: tuple[Path, Path]) -> None:
    config, d = cluster
    kc = d / "admin.kubeconfig"
    # kubeadm's own knob (ClusterConfiguration.certificateValidityPeriod, v1beta4) makes every
    # kubeadm leaf certificate valid 72 h; kube-apiserver picks its new serving cert up itself
    sh("h1", SHORT)
    short_expiry = {c["name"]: c["daysLeft"] for c in certs_json(config)["certs"]
                    if c.get("group") == "kubeadm"}
    assert len(short_expiry) == 7 and all(v <= 2 for v in short_expiry.values()), short_expiry
    # hand out a kubeconfig now: it carries the 72-hour admin certificate
    cli("kubeconfig", "--config", str(config), "--out", str(kc))
    target = ApiCaller(kc)
    wait_for("the API serves the 72-hour certificate",
             lambda: serving_days(target.host, target.port) <= 3, seconds=90)

    before = status_json(config)
    warned = [w for w in before["warnings"] if "certificate" in w]
    assert any("certificate apiserver expires in 2 days" in w for w in warned), before["warnings"]
    assert any("admin.conf" in w for w in warned)
    text = cli("status", "--config", str(config))
    excerpt = [ln for ln in text.splitlines() if ln.startswith("warning:")]
    assert excerpt
    print("\n[k8s-certs] status before renewal:\n  " + "\n  ".join(excerpt[:4]))

    pids = {n: pid(n) for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}
    with ApiCaller(kc) as probe:
        wait_for("the client's first calls", lambda: probe.ok >= 5, seconds=60)
        t0 = time.monotonic()
        res = run_cli("certs", "renew", "--yes", "--config", str(config), timeout=900)
        took = time.monotonic() - t0
        calls_during = probe.total
        failed_during = list(probe.failed)
        # a few more calls after the renewal: the new serving certificate is in use
        n = probe.ok
        wait_for("calls after the renewal", lambda: probe.ok >= n + 5, seconds=60)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "kubeadm certs renew all" in res.stdout
    print(f"\n[k8s-certs] certs renew (kubeadm, 1 control plane): {took:.1f}s; API calls "
          f"during it: {len(failed_during)} failed of {calls_during}; serving cert serials "
          f"seen: {len(probe.serials)}")
    assert calls_during >= 10, calls_during
    assert failed_during == [], failed_during
    assert probe.failed == [], probe.failed

    # the apiserver kept running and reloaded its serving certificate; the two components
    # that read their certificate only at start were restarted
    assert pid("kube-apiserver") == pids["kube-apiserver"]
    assert pid("kube-controller-manager") != pids["kube-controller-manager"]
    assert pid("kube-scheduler") != pids["kube-scheduler"]
    assert len(probe.serials) >= 2, probe.serials  # the 72 h one, then the renewed one

    after = certs_json(config)
    for c in after["certs"]:
        if c.get("group") == "kubeadm":
            assert c["daysLeft"] >= 363, c
    st = status_json(config)
    cert_warnings = [w for w in st["warnings"] if "certificate" in w and "kubeconfig" not in w]
    assert cert_warnings == [], cert_warnings
    # the kubeconfig handed out before still carries the old certificate, and says so
    assert any("kubeconfig lab" in w for w in st["warnings"]), st["warnings"]
    cli("kubeconfig", "--config", str(config), "--out", str(kc))
    assert [w for w in status_json(config)["warnings"] if "certificate" in w] == []
    # renewing again has nothing to do, and apply has nothing to change
    assert "nothing to renew" in cli("certs", "renew", "--config", str(config))
    assert plan_json(config)["changes"] == 0


@pytest.mark.timeout(900)
def test_renewing_everything_on_one_host_measures_the_etcd_restart(
        cluster: tuple[Path, Path]) -> None:
    """`--within 400` takes every etcd and kubeadm certificate. With a single etcd member its
    restart is a real outage of the API's storage: the failed calls are measured and printed
    (no target: with 3 members the rolling restart keeps quorum, see test_day2); what must
    hold is that everything is renewed and the API answers again without help."""
    config, d = cluster
    kc = d / "admin.kubeconfig"
    cli("kubeconfig", "--config", str(config), "--out", str(kc))
    serials = {(c["host"], c["path"]): c.get("serial") for c in certs_json(config)["certs"]}
    with ApiCaller(kc) as probe:
        wait_for("the client's first calls", lambda: probe.ok >= 5, seconds=60)
        t0 = time.monotonic()
        res = run_cli("certs", "renew", "--within", "400", "--yes", "--config", str(config),
                      timeout=900)
        took = time.monotonic() - t0
        total, failed = probe.total, len(probe.failed)
        n = probe.ok
        wait_for("calls succeed after the renewal", lambda: probe.ok >= n + 5, seconds=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "kubeadm certs renew all" in res.stdout and "etcd restart order" in res.stdout, res.stdout
    print(f"\n[k8s-certs] certs renew --within 400 (etcd: 1 member, restarted; kubeadm): "
          f"{took:.1f}s; API calls during it: {failed} failed of {total}"
          + (f" (first: {probe.failed[0]})" if probe.failed else ""))
    after = certs_json(config)["certs"]
    renewed = [c for c in after if c.get("group") in ("etcd", "kubeadm")]
    assert len(renewed) >= 12
    for c in renewed:
        assert c["serial"] != serials.get((c["host"], c["path"])), c
    # the kubelet's self-signed serving certificate (1 year) is inside 400 days too: a new one,
    # and it is the one port 10250 serves
    assert "renewed the kubelet serving certificate on 1 node(s): h1" in res.stdout, res.stdout
    serving = [c for c in after if c.get("name") == "kubelet-serving"]
    assert len(serving) == 1 and serving[0]["serial"] != serials.get(("h1", serving[0]["path"]))
    assert serving[0]["daysLeft"] >= 364, serving[0]
    served = ssl.get_server_certificate((probe.host, 10250))  # 1 host: the API is h1
    assert cert_info(served.encode()).serial_hex == serving[0]["serial"]
    assert plan_json(config)["changes"] == 0


def serving_days(host: str, port: int) -> int:
    """Days left on the certificate the API serves right now."""
    pem = ssl.get_server_certificate((host, port))
    return cert_info(pem.encode()).days_left(datetime.now(UTC))


# ---------------------------------------------------------------------------------------------
# backups


def backup_row(config: Path) -> dict[str, Any]:
    rows = status_json(config)["backups"]
    assert [r["name"] for r in rows] == ["h1"]
    return dict(rows[0])


@pytest.mark.timeout(600)
def test_status_shows_backup_age_and_warns_when_the_timer_stops(cluster: tuple[Path, Path]) -> None:
    config, _ = cluster
    wait_for("a scheduled snapshot with its revision in status",
             lambda: backup_row(config).get("revision") is not None, seconds=120, every=3)
    row = backup_row(config)
    assert row["periodSeconds"] == 20 and row["timer"] == "active"
    assert row["size"] > 0 and row["keys"] > 0 and row["lastResult"] == "success"
    assert row["ageSeconds"] < 40 and row["warnings"] == [], row
    text = cli("status", "--config", str(config))
    block = text[text.index("etcd backups"):].splitlines()[:3]
    print("\n[k8s-certs] status, backups (timer running):\n  " + "\n  ".join(block))
    assert not [ln for ln in text.splitlines() if "snapshot" in ln and ln.startswith("warning:")]

    sh("h1", "systemctl stop homekube-etcd-backup.timer")
    t0 = time.monotonic()
    try:
        stopped = backup_row(config)
        assert any("timer" in w and "inactive" in w for w in stopped["warnings"]), stopped
        assert not any("twice the schedule" in w for w in stopped["warnings"]), stopped
        # no mtime faked: wait for real time to pass twice the schedule
        wait_for("the age warning", lambda: any(
            "twice the schedule" in w for w in backup_row(config)["warnings"]),
            seconds=180, every=5)
        late = backup_row(config)
        assert late["ageSeconds"] > 40, late
        text = cli("status", "--config", str(config))
        warn = [ln for ln in text.splitlines() if ln.startswith("warning: h1:") and "snapshot" in ln]
        assert warn, text[-1500:]
        print(f"\n[k8s-certs] timer stopped; age warning after {time.monotonic() - t0:.0f}s:\n  "
              + "\n  ".join(warn))
    finally:
        sh("h1", "systemctl start homekube-etcd-backup.timer")
    wait_for("no backup warning once the timer runs again",
             lambda: backup_row(config)["warnings"] == [], seconds=120, every=5)


def test_backup_verify_restores_into_a_scratch_dir_without_touching_the_cluster(
        cluster: tuple[Path, Path], tmp_path: Path) -> None:
    config, _ = cluster
    out = cli("backup", "--config", str(config), "--out", str(tmp_path), "--quiet")
    snap = Path(out.strip().splitlines()[-1])
    side = json.loads(snap.with_suffix(".json").read_text())
    etcd_pid = sh("h1", "systemctl show -p MainPID --value etcd").strip()
    res = run_cli("backup", "--config", str(config), "--verify", str(snap))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{side['keys']} live keys at revision {side['revision']} (matches its sidecar)" in res.stdout
    print(f"\n[k8s-certs] {res.stdout.strip()}")
    # the cluster's etcd was not restarted and nothing is left behind
    assert sh("h1", "systemctl show -p MainPID --value etcd").strip() == etcd_pid
    assert sh("h1", "ls -d /var/tmp/homekube-verify.* 2>/dev/null || true").strip() == ""
    # a damaged copy is refused before anything is sent
    bad = tmp_path / "bad.db"
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    res = run_cli("backup", "--config", str(config), "--verify", str(bad))
    assert res.returncode != 0 and "trailer" in (res.stdout + res.stderr)
