"""Day-2 etcd operations on real hosts: backup → destroy → restore, the backup timer and its
retention, certificate listing, and a rolling certificate renewal under a steady write load.

One 3-member TLS etcd for the module, on hosts started fresh for it. Figures (durations, key
counts, writes during renewal) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homekube import lab as hklab
from tests.rig.helpers import cli, plan_json, run_cli, sh, write_config

pytestmark = pytest.mark.rig

HOSTS = ("h1", "h2", "h3")
ENV = "set -a; . /etc/etcd/etcdctl.env; set +a"
N_KEYS = 1000


@pytest.fixture(scope="module")
def cluster(lab: hklab.Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fresh hosts, all three etcd members, applied; yields the cluster.yaml."""
    d = tmp_path_factory.mktemp("day2")
    base = d / "lab.yaml"
    hklab.down()
    hklab.up(3, config_path=base)
    cfg = write_config(base, d / "cluster.yaml", etcd_hosts=HOSTS)
    t0 = time.monotonic()
    cli("apply", "--config", str(cfg), "--quiet")
    print(f"\n[day2] apply (host prep + 3-member TLS etcd): {time.monotonic() - t0:.1f}s")
    assert plan_json(cfg)["changes"] == 0
    # status talks mTLS from here: it issues the operator's client certificate `certs` lists
    assert "3 of 3 endpoints healthy" in cli("status", "--config", str(cfg))
    yield cfg


def members(name: str = "h1") -> list[str]:
    out = json.loads(sh(name, f"{ENV}; etcdctl member list -w json"))
    return sorted(m["name"] for m in out["members"])


def all_kvs(name: str, prefix: str) -> dict[str, str]:
    out = json.loads(sh(name, f"{ENV}; etcdctl get {prefix} --prefix -w json", timeout=60))
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
            for kv in out.get("kvs", [])}


def certs(cfg: Path) -> dict[tuple[str, str], dict[str, Any]]:
    data = json.loads(cli("certs", "--config", str(cfg), "--output", "json"))
    return {(c["host"], c["path"]): c for c in data["certs"]}


# ------------------------------------------------------------------------------------ certs


@pytest.mark.timeout(120)
def test_certs_lists_every_cert_with_days_left(cluster: Path) -> None:
    got = certs(cluster)
    for h in HOSTS:
        for path, cn in (("/etc/kubernetes/pki/etcd/server.crt", h),
                         ("/etc/kubernetes/pki/etcd/peer.crt", h),
                         ("/etc/kubernetes/pki/etcd/healthcheck-client.crt", "kube-etcd-healthcheck-client"),
                         ("/etc/kubernetes/pki/apiserver-etcd-client.crt", "kube-apiserver-etcd-client"),
                         ("/etc/kubernetes/pki/etcd/ca.crt", "etcd-ca"),
                         ("/etc/etcd/pki/server.crt", h), ("/etc/etcd/pki/peer.crt", h),
                         ("/etc/etcd/pki/ca.crt", "etcd-ca")):
            c = got[(h, path)]
            assert c["cn"] == cn and 360 <= c["daysLeft"] <= 3650, c
    local = {p.rsplit("/", 1)[1]: c for (h, p), c in got.items() if h == "(local)"}
    assert local["ca.crt"]["cn"] == "etcd-ca" and local["ca.crt"]["daysLeft"] >= 3640
    assert local["operator.crt"]["cn"] == "homekube-operator"
    assert all(isinstance(c["daysLeft"], int) for c in got.values())
    text = cli("certs", "--config", str(cluster))
    assert "days left" in text and text.count("kube-etcd-healthcheck-client") == 3


# ---------------------------------------------------------------------- backup and restore


def write_keys(n: int) -> dict[str, str]:
    """n keys in one exec: etcdctl txn, 100 puts per transaction (etcd's limit is 128)."""
    want = {f"/day2/key-{i:04d}": f"value-{i}-{(i * 7919) % 10007}" for i in range(n)}
    items = list(want.items())
    script = [ENV]
    for i in range(0, n, 100):
        ops = "\n".join(f"put {k} {v}" for k, v in items[i : i + 100])
        script.append(f"etcdctl txn >/dev/null <<'EOF'\n\n{ops}\n\n\nEOF")
    sh("h1", "\n".join(script), timeout=120)
    return want


@pytest.mark.timeout(300)
def test_backup_destroy_restore_1000_keys(cluster: Path, lab: hklab.Lab) -> None:
    want = write_keys(N_KEYS)
    assert all_kvs("h2", "/day2/") == want

    t0 = time.monotonic()
    out = cli("backup", "--config", str(cluster))
    t_backup = time.monotonic() - t0
    snap = Path(out.strip().splitlines()[-1])  # the last line is the local file's path
    assert snap.is_file() and snap.stat().st_mode & 0o777 == 0o600
    assert snap.parent == lab.dir / "state" / "lab" / "backups"
    assert re.fullmatch(r"lab-\d{8}T\d{6}Z\.db", snap.name)
    side = json.loads(snap.with_suffix(".json").read_text())
    assert side["keys"] == N_KEYS and side["totalKey"] >= N_KEYS and side["revision"] > 0
    assert side["member"] in HOSTS and len(side["sha256"]) == 64
    for h in HOSTS:  # the temp copy on the member is gone
        assert sh(h, "ls /var/tmp | grep -c homekube-backup || true").strip() == "0"

    # a write after the backup must not survive the restore
    sh("h1", f"{ENV}; etcdctl put /day2/after-backup x >/dev/null")
    # stand-in kube-apiserver manifest: restore must move it aside and back
    sh("h1", "mkdir -p /etc/kubernetes/manifests && echo 'kind: Pod' > "
             "/etc/kubernetes/manifests/kube-apiserver.yaml")

    # disaster: every member loses its data
    for h in HOSTS:
        sh(h, "systemctl stop etcd && rm -rf /var/lib/etcd && test ! -e /var/lib/etcd")

    dry = cli("restore", str(snap), "--config", str(cluster))
    assert "nothing was changed" in dry and "1. h1, h2, h3: restore the snapshot" in dry
    assert sh("h1", "test ! -e /var/lib/etcd && echo untouched").strip() == "untouched"

    t0 = time.monotonic()
    out = cli("restore", str(snap), "--yes", "--config", str(cluster))
    t_restore = time.monotonic() - t0
    assert f"{N_KEYS} live keys (snapshot: {N_KEYS})" in out, out

    got = all_kvs("h3", "/day2/")
    assert got == want  # the same 1,000 keys and values, and not the later write
    assert members("h2") == list(HOSTS)
    for h in HOSTS:
        assert sh(h, "stat -c '%a %U' /var/lib/etcd").strip() == "700 etcd"
        assert sh(h, "ls /var/tmp | grep -c homekube-restore || true").strip() == "0"
    assert sh("h1", "cat /etc/kubernetes/manifests/kube-apiserver.yaml").strip() == "kind: Pod"
    assert sh("h1", "ls /etc/kubernetes").split() == ["manifests", "pki"]
    status = json.loads(sh("h1", f"{ENV}; etcdctl endpoint status -w json"))[0]["Status"]
    bump = "--bump-revision" in hklab.host_exec("h1", "etcdutl snapshot restore --help").stdout
    floor = side["revision"] + (1_000_000_000 if bump else 0)
    assert status["header"]["revision"] >= floor
    assert plan_json(cluster)["changes"] == 0

    sh("h1", "rm -rf /etc/kubernetes/manifests")
    print(f"\n[day2] backup {t_backup:.2f}s ({side['size']} bytes, {side['keys']} keys), "
          f"restore of 3 members {t_restore:.2f}s, {len(got)} keys verified, "
          f"revision {status['header']['revision']} (bump-revision {'on' if bump else 'unsupported by etcdutl 3.5.1'})")


# ---------------------------------------------------------------------------- backup timer


def saved_runs(h: str) -> int:
    out = sh(h, "journalctl -u homekube-etcd-backup.service --no-pager -o cat | grep -c saved || true")
    return int(out.strip() or 0)


@pytest.mark.timeout(240)
def test_timer_fires_and_retention_keeps_exactly_keep(cluster: Path, tmp_path: Path) -> None:
    keep = 3
    timed = write_config(cluster, tmp_path / "timed.yaml", etcd_hosts=HOSTS, replace={
        "  install: tarball\n":
            "  install: tarball\n"
            f"  backup: {{schedule: '*:*:0/5', keep: {keep}, maxBytes: 50000000, dir: /var/backups/etcd}}\n"})
    cli("apply", "--config", str(timed), "--quiet")
    assert plan_json(timed)["changes"] == 0
    for h in HOSTS:
        assert sh(h, "systemctl is-active homekube-etcd-backup.timer").strip() == "active"
        assert sh(h, "systemctl is-enabled homekube-etcd-backup.timer").strip() == "enabled"
        # scheduled: a next elapse time (empty only for the instant the service is running)
        nxt = sh(h, "for _ in $(seq 50); do t=$(systemctl show -p NextElapseUSecRealtime "
                    "--value homekube-etcd-backup.timer); [ -n \"$t\" ] && break; sleep 0.2; "
                    "done; echo \"$t\"")
        assert nxt.strip() not in ("", "n/a", "0"), nxt

    # the timer fires on its own: wait for more runs than `keep` on every member
    t0 = time.monotonic()
    while min(saved_runs(h) for h in HOSTS) < keep + 2:
        assert time.monotonic() - t0 < 90, {h: saved_runs(h) for h in HOSTS}
        time.sleep(2)
    for h in HOSTS:
        files = sh(h, "ls /var/backups/etcd").split()
        assert len(files) == keep, files
        assert all(re.fullmatch(rf"lab-{h}-\d{{8}}T\d{{6}}Z\.db", f) for f in files), files
        assert sh(h, "stat -c %a /var/backups/etcd").strip() == "700"
        log = sh(h, "journalctl -u homekube-etcd-backup.service --no-pager -o cat")
        assert f"(keep {keep})" in log and "SKIPPED" not in log
        # a snapshot from the timer is a valid etcd snapshot
        newest = files[-1]
        st = json.loads(sh(h, f"etcdutl snapshot status /var/backups/etcd/{newest} -w json"))
        assert st["totalKey"] >= N_KEYS
    print(f"\n[day2] timer: {min(saved_runs(h) for h in HOSTS)}+ runs per member in "
          f"{time.monotonic() - t0:.0f}s, {keep} files kept on each")

    # schedule null: the timer goes, the snapshots stay
    cli("apply", "--config", str(cluster), "--quiet")
    assert plan_json(cluster)["changes"] == 0
    for h in HOSTS:
        assert "not-found" in sh(h, "systemctl show -p LoadState homekube-etcd-backup.timer")
        assert sh(h, "ls /usr/local/sbin | grep -c homekube-etcd-backup || true").strip() == "0"
        assert len(sh(h, "ls /var/backups/etcd").split()) == keep


# ------------------------------------------------------------------------ renewal under load

WRITER = r"""
set -u
d=/root/writer; rm -rf $d /root/writer.stop; mkdir -p $d
# a client that loaded its certificate once, like kube-apiserver does
cp /etc/kubernetes/pki/etcd/ca.crt /etc/kubernetes/pki/etcd/healthcheck-client.crt \
   /etc/kubernetes/pki/etcd/healthcheck-client.key $d/
ctl() {
  etcdctl --endpoints=__EPS__ --cacert $d/ca.crt --cert $d/healthcheck-client.crt \
    --key $d/healthcheck-client.key --dial-timeout=2s --command-timeout=3s "$@"
}
# quorum watch: how many members commit a proposal, sampled back to back
( while [ ! -e /root/writer.stop ]; do
    echo "$(ctl endpoint health 2>/dev/null | grep -c 'is healthy') $(date +%s.%N)" >> $d/health
    sleep 0.1
  done ) &
i=0
while [ ! -e /root/writer.stop ]; do
  i=$((i + 1))
  # one retry of the same (idempotent) put, as any etcd client library does on a dropped
  # connection: a put in flight on a member that is being stopped can fail (see the test)
  if ctl put /writer/$i $i >/dev/null 2>>$d/errors; then
    echo "ok $i $(date +%s.%N)" >> $d/log
  elif sleep 0.2 && ctl put /writer/$i $i >/dev/null 2>>$d/errors; then
    echo "retried $i $(date +%s.%N)" >> $d/log
  else
    echo "FAIL $i $(date +%s.%N)" >> $d/log
  fi
done
wait
echo done >> $d/log
"""


def writer_log() -> list[str]:
    return sh("h1", "cat /root/writer/log 2>/dev/null || true").splitlines()


@pytest.mark.timeout(300)
def test_rolling_renewal_under_writes_loses_nothing(cluster: Path, lab: hklab.Lab) -> None:
    before = certs(cluster)
    dry = cli("certs", "renew", "--within", "400", "--config", str(cluster))
    assert "nothing was changed" in dry and "restart order" in dry
    assert "h1, h2, h3" in dry
    assert {k: v["serial"] for k, v in certs(cluster).items()} == {
        k: v["serial"] for k, v in before.items()}  # the dry run changed nothing

    eps = ",".join(f"https://{h.ipv4}:2379" for h in lab.hosts)
    sh("h1", f"cat > /root/writer.sh <<'EOF'\n{WRITER.replace('__EPS__', eps)}\nEOF\n"
             "nohup bash /root/writer.sh >/dev/null 2>&1 &")
    t0 = time.monotonic()
    while len(writer_log()) < 20:
        assert time.monotonic() - t0 < 30, writer_log()
        time.sleep(0.5)
    n_before = len(writer_log())

    t0, t_start = time.monotonic(), float(sh("h1", "date +%s.%N"))
    res = run_cli("certs", "renew", "--within", "400", "--yes", "--config", str(cluster))
    t_renew, t_end = time.monotonic() - t0, float(sh("h1", "date +%s.%N"))
    out = res.stdout
    assert res.returncode == 0 and "renewed 12 certificate(s) on 3 member(s)" in out, out + res.stderr
    # progress (stderr) says when each member's restart was done, in order
    restarts = re.findall(r"✓ (h\d): restart etcd", res.stderr)
    assert restarts == list(HOSTS), res.stderr
    n_during = len(writer_log()) - n_before

    time.sleep(2)
    sh("h1", "touch /root/writer.stop")
    t0 = time.monotonic()
    while "done" not in writer_log():
        assert time.monotonic() - t0 < 30
        time.sleep(0.5)
    log = [ln for ln in writer_log() if ln != "done"]
    fails = [ln for ln in log if ln.startswith("FAIL")]
    retried = [ln for ln in log if ln.startswith("retried")]
    errors = sh("h1", "sort /root/writer/errors 2>/dev/null | grep -o 'Error: .*' | uniq -c || true")
    assert not fails, (fails[:10], errors)
    assert n_during >= 20, n_during  # the writer really wrote through the renewal
    # quorum held throughout: at least 2 of 3 members committed proposals at every sample
    health = [ln.split() for ln in sh("h1", "cat /root/writer/health").splitlines()]
    span = [int(n) for n, t in health if t_start <= float(t) <= t_end]
    assert len(span) >= 4 and min(span) >= 2, (span, t_renew)
    # every acknowledged write is there, on another member
    stored = all_kvs("h3", "/writer/")
    assert len(stored) == len(log)

    after = certs(cluster)
    renewed = [k for k in before if k[0] != "(local)" and not k[1].endswith("ca.crt")]
    assert len(renewed) == 3 * 6  # 4 in kubeadm's tree + etcd's 2 copies, per member
    for k in renewed:
        assert after[k]["notAfter"] > before[k]["notAfter"], (k, before[k], after[k])
        assert after[k]["serial"] != before[k]["serial"]
    for k in before:
        if k[1].endswith("ca.crt"):
            assert after[k]["serial"] == before[k]["serial"]  # the CA stays
    op = next(k for k in before if k[1].endswith("operator.crt"))
    assert after[op]["notAfter"] > before[op]["notAfter"]
    # every member serves its new server certificate
    for h in lab.hosts:
        served = sh("h2", f"openssl s_client -connect {h.ipv4}:2379 </dev/null 2>/dev/null "
                          "| openssl x509 -noout -serial").strip().split("=")[1].lower()
        assert served.lstrip("0") == after[(h.name, "/etc/kubernetes/pki/etcd/server.crt")]["serial"]
    assert members() == list(HOSTS)
    assert plan_json(cluster)["changes"] == 0
    print(f"\n[day2] renewal of 12 certs on 3 members: {t_renew:.1f}s; writer: {len(log)} puts, "
          f"{n_during} during the renewal, {len(fails)} failed, {len(retried)} needed their one "
          f"retry; members healthy during renewal: min {min(span)} of 3 over {len(span)} samples"
          + (f"; first-attempt errors: {errors.strip()}" if errors.strip() else ""))
