"""Pure parts of issue 14 parts 4 and 5: certificate inventory and warnings, kubeadm renewal
order, kubeconfig merge and record, the backup fact's parser and `status` rows, and the
`backup --verify` parser. Outputs are the forms captured on lab hosts (Debian 12, systemd
252, kubeadm 1.36.3)."""

from __future__ import annotations

import subprocess
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from homekube.components.backup import (
    SERVICE,
    TIMER,
    BackupFacts,
    backup_fact,
    backup_status,
    parse_backup_fact,
)
from homekube.components.kubernetes import kube_cert_fact
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.etcd.snapshot import Verified, parse_verify, verify_problems, verify_script
from homekube.facts.host import HostFacts
from homekube.facts.system import FileState, UnitState
from homekube.ops.certs import (
    host_expiries,
    kubeadm_renewals,
    kubelet_serving_renewals,
    renew_kubelet_serving,
    restart_static_pods,
)
from homekube.pki.inventory import (
    Expiry,
    handed_out_entry,
    handed_out_rows,
    kubeadm_due,
    merge_kubeconfig,
    parse_pem_sections,
    record_handed_out,
    warnings,
)
from tests.unit.factsgen import debian12
from tests.unit.waves import wave_of

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def config(backup: str = "{schedule: '*:*:0/20', keep: 3}") -> ClusterConfig:
    return load_text(textwrap.dedent(f"""\
        name: home
        kubernetes: {{enabled: true, version: "1.36"}}
        etcd:
          backup: {backup}
        ssh: {{key: null, knownHosts: null, config: null}}
        hosts:
          - {{name: a, address: 192.0.2.11, roles: [control-plane, etcd]}}
          - {{name: b, address: 192.0.2.12, roles: [control-plane, etcd, worker]}}
          - {{name: c, address: 192.0.2.13, roles: [etcd, worker]}}
        """))


def pem(cn: str, not_after: datetime, not_before: datetime | None = None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or not_after - timedelta(days=365))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------------------------------------
# the backup fact and the status row

#: the `etcd-backup` fact on a lab host, 12 s after the timer's third run
CAPTURED = """\
now=1795770432
count=3
newest=1795770420.2315260580 1916960 home-a-20261127T084700Z.db
file=home-a-20261127T084700Z.db
last.file=home-a-20261127T084700Z.db
last.size=1916960
last.revision=1411
last.keys=365
result=success
status=0
elapse=Fri 2026-11-27 08:47:20 UTC
elapse=Fri 2026-11-27 08:47:40 UTC
"""


def test_backup_fact_parses_the_captured_output() -> None:
    b = parse_backup_fact(CAPTURED)
    assert b == BackupFacts(now=1795770432.0, count=3, newest="home-a-20261127T084700Z.db",
                            newest_size=1916960, newest_mtime=1795770420.231526058,
                            revision=1411, keys=365, result="success", exit_status=0,
                            period=20.0)


def test_backup_fact_ignores_a_last_file_naming_another_snapshot() -> None:
    text = CAPTURED.replace("last.file=home-a-20261127T084700Z.db", "last.file=older.db")
    b = parse_backup_fact(text)
    assert b.newest == "home-a-20261127T084700Z.db" and b.revision is None and b.keys is None


def test_backup_fact_of_an_empty_directory_and_no_schedule() -> None:
    b = parse_backup_fact("now=100\ncount=0\nnewest=\nresult=\nstatus=\n")
    assert b == BackupFacts(now=100.0)


def test_backup_fact_snippet_is_bash_and_asks_systemd_for_the_period() -> None:
    cfg = config()
    cmd = backup_fact(cfg, cfg.host("a")).command
    subprocess.run(["bash", "-n"], input=cmd, text=True, check=True)
    assert "systemd-analyze calendar --iterations=2 '*:*:0/20'" in cmd
    assert "'home-a''-*.db'" in cmd
    # the period line is left out when there is no schedule
    assert "systemd-analyze" not in backup_fact(config("{schedule: null}"), cfg.host("a")).command


def with_backup(f: HostFacts, text: str, timer: str = "active") -> HostFacts:
    units = {TIMER: UnitState(TIMER, "loaded", timer, "enabled"),
             SERVICE: UnitState(SERVICE, "loaded", "inactive", "static")}
    return replace(f, units={**f.units, **units},
                   extra={**f.extra, "etcd-backup": parse_backup_fact(text)})


def test_status_row_of_a_fresh_snapshot_has_no_warning() -> None:
    cfg = config()
    row = backup_status(cfg, cfg.host("a"), with_backup(debian12("a"), CAPTURED))
    assert row["warnings"] == []
    assert (row["file"], row["size"], row["revision"], row["keys"]) == (
        "home-a-20261127T084700Z.db", 1916960, 1411, 365)
    assert 11 < row["ageSeconds"] < 12 and row["periodSeconds"] == 20 and row["timer"] == "active"


def test_status_warns_past_twice_the_schedule_not_before() -> None:
    cfg = config()
    at_40 = CAPTURED.replace("now=1795770432", "now=1795770460")  # 39.8 s old
    at_41 = CAPTURED.replace("now=1795770432", "now=1795770461")  # 40.8 s old
    assert backup_status(cfg, cfg.host("a"), with_backup(debian12("a"), at_40))["warnings"] == []
    w = backup_status(cfg, cfg.host("a"), with_backup(debian12("a"), at_41))["warnings"]
    assert w == ["the newest snapshot is 40s old, more than twice the schedule (20s)"]


def test_status_warns_when_the_timer_stopped_or_the_last_run_failed() -> None:
    cfg = config()
    f = with_backup(debian12("a"), CAPTURED.replace("result=success", "result=exit-code")
                    .replace("status=0", "status=75"), timer="inactive")
    w = backup_status(cfg, cfg.host("a"), f)["warnings"]
    assert w == [
        f"backup timer {TIMER} is inactive: no snapshots are being taken",
        f"the last scheduled backup failed (exit-code, exit status 75): journalctl -u {SERVICE}",
    ]


def test_status_has_nothing_to_warn_without_a_schedule() -> None:
    cfg = config("{schedule: null}")
    row = backup_status(cfg, cfg.host("a"), debian12("a"))
    assert row["warnings"] == [] and row["schedule"] is None


# ---------------------------------------------------------------------------------------------
# certificates


def test_pem_sections_keep_only_the_first_certificate_and_let_the_last_section_win() -> None:
    a, b, c = (pem(n, NOW + timedelta(days=30)) for n in "abc")
    text = ("@@admin.conf\n" + a.decode() + "\n@@kubelet-client\n" + b.decode()
            + "-----BEGIN EC PRIVATE KEY-----\nnot shown\n-----END EC PRIVATE KEY-----\n"
            + "@@kubelet-serving\n" + a.decode() + "@@kubelet-serving\n" + c.decode()
            + "@@empty\n")
    got = parse_pem_sections(text)
    assert got == {"admin.conf": a, "kubelet-client": b, "kubelet-serving": c}
    assert b"PRIVATE" not in b"".join(got.values())


def test_kube_cert_fact_reads_kubeconfigs_only_on_control_planes() -> None:
    cfg = config()
    cp = kube_cert_fact(cfg.host("a")).command
    worker = kube_cert_fact(cfg.host("c")).command
    for cmd in (cp, worker):
        subprocess.run(["bash", "-n"], input=cmd, text=True, check=True)
    assert "@@admin.conf" in cp and "@@controller-manager.conf" in cp
    assert "admin.conf" not in worker and "@@kubelet-client" in worker
    # the key never leaves: only certificate blocks and client-certificate-data are printed
    assert "client-key-data" not in cp and "/-BEGIN CERTIFICATE-/,/-END CERTIFICATE-/p" in worker


def cp_facts(host: str, days_left: float) -> HostFacts:
    """A control plane whose kubeadm certificates expire in `days_left` days."""
    na = NOW + timedelta(days=days_left)
    files = {f"/etc/kubernetes/pki/{n}.crt": pem(n, na) for n in
             ("apiserver", "apiserver-kubelet-client", "front-proxy-client")}
    files["/etc/kubernetes/pki/ca.crt"] = pem("kubernetes", NOW + timedelta(days=3650))
    fs = {p: FileState(p, 0o644, "root", "root", len(c), "-", c) for p, c in files.items()}
    pems = {n: pem(n, na) for n in ("admin.conf", "super-admin.conf", "controller-manager.conf",
                                    "scheduler.conf")}
    pems["kubelet-client"] = pem("system:node:" + host, NOW + timedelta(days=365))
    return replace(debian12(host), files=fs, extra={"kube-certs": pems})


def test_host_expiries_name_and_group_every_certificate() -> None:
    cfg = config()
    rows = {e.name: e for e in host_expiries(cfg, cfg.host("a"), cp_facts("a", 2.5), NOW)}
    assert {n: (e.group, e.days_left) for n, e in rows.items()} == {
        "apiserver": ("kubeadm", 2), "apiserver-kubelet-client": ("kubeadm", 2),
        "front-proxy-client": ("kubeadm", 2), "ca": ("ca", 3650),
        "admin.conf": ("kubeadm", 2), "super-admin.conf": ("kubeadm", 2),
        "controller-manager.conf": ("kubeadm", 2), "scheduler.conf": ("kubeadm", 2),
        "kubelet-client": ("kubelet", 365)}
    assert rows["admin.conf"].path == "/etc/kubernetes/admin.conf"
    assert rows["kubelet-client"].path == "/var/lib/kubelet/pki/kubelet-client"


def exp(name: str, days: int, group: str = "kubeadm") -> Expiry:
    return Expiry("a", name, f"/x/{name}", name, NOW + timedelta(days=days, hours=1), days, group)


def test_warnings_inside_the_window_only_soonest_first() -> None:
    rows = [exp("apiserver", 29), exp("admin.conf", 30), exp("etcd/server", -1, "etcd"),
            exp("kubelet-client", 1, "kubelet")]
    assert warnings(rows, 30) == [
        "a: certificate etcd/server has EXPIRED (2026-11-26 10:00 UTC); homekube certs renew",
        "a: certificate kubelet-client expires in 1 day (2026-11-28 10:00 UTC); the kubelet "
        "rotates it; check `journalctl -u kubelet`",
        "a: certificate apiserver expires in 29 days (2026-12-26 10:00 UTC); homekube certs renew",
    ]
    assert [e.name for e in kubeadm_due(rows, 30)] == ["apiserver"]


def test_kubeadm_renewal_goes_one_control_plane_at_a_time() -> None:
    cfg = config()
    facts = {"a": cp_facts("a", 2), "b": cp_facts("b", 10), "c": debian12("c")}
    cs = kubeadm_renewals(cfg, facts, 30, NOW)
    wave = wave_of(cs)
    assert [(c.host, wave(c), c.summary) for c in cs] == [
        ("a", 0, "kubeadm certs renew all"),
        ("a", 1, "restart kube-controller-manager, kube-scheduler"),
        ("b", 2, "kubeadm certs renew all"),
        ("b", 3, "restart kube-controller-manager, kube-scheduler")]
    assert "first: apiserver, 2 days left" in cs[0].why
    # outside the window: nothing; a control plane with nothing due is skipped
    assert kubeadm_renewals(cfg, facts, 2, NOW) == []
    assert [c.host for c in kubeadm_renewals(cfg, facts, 5, NOW)] == ["a", "a"]


def test_static_pod_restart_script_is_bash_and_never_touches_the_apiserver() -> None:
    text = restart_static_pods()
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    assert "kube-apiserver" not in text
    assert "trap" in text and "/healthz" in text and "pgrep -of '^kube-controller-manager( |$)'" in text


def with_serving(f: HostFacts, days: float) -> HostFacts:
    pems = dict(f.extra["kube-certs"]) if "kube-certs" in f.extra else {}
    pems["kubelet-serving"] = pem(f"{f.hostname}@1764000000", NOW + timedelta(days=days))
    return replace(f, extra={**f.extra, "kube-certs": pems})


def test_kubelet_serving_renewal_goes_one_node_at_a_time_where_due() -> None:
    cfg = config()
    facts = {"a": with_serving(cp_facts("a", 300), 20), "b": with_serving(cp_facts("b", 300), 200),
             "c": with_serving(debian12("c"), 5)}
    cs = kubelet_serving_renewals(cfg, facts, 30, NOW)
    wave = wave_of(cs)
    # a is due (20 days), b is not (200), c is a worker and due (5): a first, then c
    assert [(c.host, wave(c)) for c in cs] == [("a", 0), ("c", 1)]
    assert "expires within 30 days (5 days left)" in cs[1].why
    assert kubelet_serving_renewals(cfg, facts, 3, NOW) == []
    # kubeadm's renewal does not take the kubelet's certificate
    assert kubeadm_renewals(cfg, facts, 30, NOW) == []
    assert warnings(host_expiries(cfg, cfg.host("c"), facts["c"], NOW), 30) == [
        "c: certificate kubelet-serving expires in 5 days (2026-12-02 09:00 UTC); "
        "homekube certs renew"]


def test_kubelet_serving_script_moves_the_pair_aside_and_waits_for_port_10250() -> None:
    text = renew_kubelet_serving()
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    assert "mv -f /var/lib/kubelet/pki/kubelet.key /etc/kubernetes/homekube/replaced/" in text
    assert "systemctl restart kubelet.service" in text
    assert "openssl s_client -connect 127.0.0.1:10250" in text
    assert "rm " not in text


# ---------------------------------------------------------------------------------------------
# kubeconfigs handed out


def test_handed_out_records_replace_the_same_path_and_context() -> None:
    p = pem("kubernetes-admin", NOW + timedelta(days=3))
    e1 = handed_out_entry("/home/u/.kube/config", "lab", p, NOW)
    e2 = handed_out_entry("/tmp/k", "lab", p, NOW)
    recs = record_handed_out(record_handed_out([], e1), e2)
    recs = record_handed_out(recs, {**e1, "serial": "new"})
    assert [(r["path"], r["serial"]) for r in recs] == [("/tmp/k", e2["serial"]),
                                                          ("/home/u/.kube/config", "new")]
    rows = handed_out_rows(recs, NOW)
    assert {(r.name, r.group, r.days_left) for r in rows} == {("kubeconfig lab", "kubeconfig", 3)}
    assert "key" not in " ".join(e1)


def test_merge_keeps_other_entries_and_replaces_its_own() -> None:
    old = {"apiVersion": "v1", "kind": "Config", "current-context": "work",
           "clusters": [{"name": "work", "cluster": {"server": "https://w"}},
                        {"name": "lab", "cluster": {"server": "https://stale"}}],
           "users": [{"name": "w", "user": {"token": "t"}}],
           "contexts": [{"name": "work", "context": {"cluster": "work", "user": "w"}}]}
    new = {"clusters": [{"name": "x", "cluster": {"server": "https://lab:6443"}}],
           "users": [{"name": "x-admin", "user": {"client-certificate-data": "Yw=="}}],
           "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x-admin"}}]}
    m = merge_kubeconfig(old, new, "lab", make_current=False)
    assert m["current-context"] == "work"
    assert [c["name"] for c in m["clusters"]] == ["work", "lab"]
    assert m["clusters"][1]["cluster"]["server"] == "https://lab:6443"
    assert [u["name"] for u in m["users"]] == ["w", "lab-admin"]
    assert m["contexts"][1] == {"name": "lab", "context": {"cluster": "lab", "user": "lab-admin"}}
    assert merge_kubeconfig(None, new, "lab", make_current=False)["current-context"] == "lab"


# ---------------------------------------------------------------------------------------------
# backup --verify


def test_verify_output_and_comparison() -> None:
    got = parse_verify("keys=365\nrevision=1411\nseconds=3\n")
    assert got == Verified(365, 1411)
    assert verify_problems(got, 365, 1411) == []
    assert verify_problems(got, None, None) == []
    assert verify_problems(got, 366, 1411) == ["365 live keys restored, the backup recorded 366"]
    assert verify_problems(Verified(0, 5), None, None) == ["the restored copy holds no key at all"]
    with pytest.raises(ValueError, match="no key count"):
        parse_verify("keys=\nrevision=1\n")


def test_verify_script_is_bash_and_serves_only_loopback() -> None:
    text = verify_script("'/var/tmp/homekube-verify.x.db'", "ab" * 32)
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    assert "--listen-client-urls http://127.0.0.1:$cp" in text and "0.0.0.0" not in text
    assert "trap cleanup EXIT" in text and "etcd.service" not in text
