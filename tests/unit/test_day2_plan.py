"""Day-2 pure parts: the backup timer phase, retention (Python rule vs the real script), the
restore plan, the rolling renewal order, snapshot checks."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homekube.components.backup import (
    SCRIPT_PATH,
    SERVICE,
    SERVICE_PATH,
    TIMER,
    TIMER_PATH,
    EtcdBackupPhase,
    service_unit,
    timer_unit,
)
from homekube.components.base import Context, LocalState
from homekube.components.etcd import RESTART, restart_key
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.errors import RefusedError, UsageError
from homekube.etcd.snapshot import SCRIPT, select_expired
from homekube.facts.host import HostFacts
from homekube.facts.system import FileState, UnitState
from homekube.ops.backup import verify_trailer
from homekube.ops.certs import rolling_plan, with_window
from homekube.ops.restore import BUMP, Snapshot, describe, inspect, restore_plan
from homekube.plan.model import Act, Change, ChangeKey, NoChange, PhasePlan, Plan, Run, WriteFile
from homekube.render import etcd as r
from tests.unit.factsgen import debian12
from tests.unit.waves import wave_of

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def config(backup: str = "{schedule: daily, keep: 3, maxBytes: 1000000}",
           kubernetes: bool = False) -> ClusterConfig:
    return load_text(textwrap.dedent(f"""\
        name: home
        kubernetes: {{enabled: {str(kubernetes).lower()}, version: "1.36"}}
        etcd:
          backup: {backup}
        ssh: {{key: null, knownHosts: null, config: null}}
        hosts:
          - {{name: a, address: 192.0.2.11, address6: "2001:db8::11", roles: [control-plane, etcd]}}
          - {{name: b, address: 192.0.2.12, address6: "2001:db8::12", roles: [etcd, worker]}}
          - {{name: c, address: 192.0.2.13, address6: "2001:db8::13", roles: [etcd, worker]}}
          - {{name: w, address: 192.0.2.14, roles: [worker]}}
        """))


def facts(cfg: ClusterConfig) -> dict[str, HostFacts]:
    out = {}
    for i, h in enumerate(cfg.hosts):
        out[h.name] = debian12(h.name, v4=f"192.0.2.{11 + i}")
    return out


def file(path: str, content: bytes, mode: int = 0o644) -> FileState:
    return FileState(path, mode, "root", "root", len(content), hashlib.sha256(content).hexdigest(),
                     content)


def installed(cfg: ClusterConfig, f: HostFacts) -> HostFacts:
    """Facts of an etcd host after the backup phase ran."""
    h = cfg.host(f.host)
    assert cfg.etcd.backup.schedule is not None
    files = {
        SCRIPT_PATH: file(SCRIPT_PATH, SCRIPT.encode(), 0o755),
        SERVICE_PATH: file(SERVICE_PATH, service_unit(cfg, h)),
        TIMER_PATH: file(TIMER_PATH, timer_unit(cfg.etcd.backup.schedule)),
        cfg.etcd.backup.dir: FileState(cfg.etcd.backup.dir, 0o700, "root", "root", 4096, "-",
                                       None, "dir"),
    }
    units = {TIMER: UnitState(TIMER, "loaded", "active", "enabled"),
             SERVICE: UnitState(SERVICE, "loaded", "inactive", "static")}
    return replace(f, files={**f.files, **files}, units={**f.units, **units})


def plan(cfg: ClusterConfig, fs: dict[str, HostFacts]) -> list[Change | NoChange]:
    return EtcdBackupPhase().plan(Context(cfg, fs, LocalState(), NOW))


def changes(steps: list[Change | NoChange], host: str | None = None) -> list[Change]:
    return [s for s in steps if isinstance(s, Change) and (host is None or s.host == host)]


# ------------------------------------------------------------------------- timer phase


def test_fresh_etcd_hosts_get_dir_script_units_and_timer() -> None:
    cfg = config()
    steps = plan(cfg, facts(cfg))
    for h in ("a", "b", "c"):
        res = [c.resource for c in changes(steps, h)]
        assert res == ["dir /var/backups/etcd", f"file {SCRIPT_PATH}", f"file {SERVICE_PATH}",
                       f"file {TIMER_PATH}", f"unit {TIMER}"]
    assert not [s for s in steps if s.host == "w"]  # a worker without a timer: not even noise
    timer = next(c for c in changes(steps, "a") if c.resource == f"file {TIMER_PATH}")
    assert "systemd-analyze calendar 'daily'" in timer.actions[0].describe()
    enable = changes(steps, "a")[-1]
    assert [a.describe() for a in enable.actions] == [
        "run: systemctl daemon-reload", f"run: systemctl enable --now {TIMER}"]


def test_backup_files_for_render() -> None:
    from homekube.components.backup import backup_files

    cfg = config()
    assert [p for p, _ in backup_files(cfg, cfg.host("b"))] == [SCRIPT_PATH, SERVICE_PATH,
                                                               TIMER_PATH]
    assert backup_files(cfg, cfg.host("w")) == []
    assert backup_files(config("{schedule: null}"), cfg.host("b")) == []


def test_units_carry_settings_and_schedule() -> None:
    cfg = config("{schedule: '*:*:0/5', keep: 4, maxBytes: 5000, dir: '/srv/etcd 100%'}")
    svc = service_unit(cfg, cfg.host("b")).decode()
    assert 'Environment="HOMEKUBE_BACKUP_KEEP=4"' in svc
    assert 'Environment="HOMEKUBE_BACKUP_MAX_BYTES=5000"' in svc
    assert 'Environment="HOMEKUBE_BACKUP_DIR=/srv/etcd 100%%"' in svc  # % is a specifier
    assert 'Environment="HOMEKUBE_BACKUP_PREFIX=home-b"' in svc
    assert "Type=oneshot" in svc and f"ExecStart={SCRIPT_PATH}" in svc
    tim = timer_unit("*:*:0/5").decode()
    assert "OnCalendar=*:*:0/5" in tim and "AccuracySec=1s" in tim and "Persistent=true" in tim


def test_converged_hosts_plan_nothing() -> None:
    cfg = config()
    fs = facts(cfg)
    fs = {n: installed(cfg, f) if cfg.host(n).has("etcd") else f for n, f in fs.items()}
    assert changes(plan(cfg, fs)) == []


def test_new_schedule_rewrites_the_timer_and_restarts_it() -> None:
    cfg = config()
    fs = {n: installed(cfg, f) if cfg.host(n).has("etcd") else f for n, f in facts(cfg).items()}
    cfg2 = config("{schedule: hourly, keep: 3, maxBytes: 1000000}")
    res = {c.resource: c for c in changes(plan(cfg2, fs), "a")}
    assert set(res) == {f"file {TIMER_PATH}", f"unit {TIMER}"}
    assert [a.describe() for a in res[f"unit {TIMER}"].actions] == [
        "run: systemctl daemon-reload", f"run: systemctl restart {TIMER}"]


def test_changed_retention_only_reloads_systemd() -> None:
    cfg = config()
    fs = {n: installed(cfg, f) if cfg.host(n).has("etcd") else f for n, f in facts(cfg).items()}
    cfg2 = config("{schedule: daily, keep: 9, maxBytes: 1000000}")
    res = {c.resource: c for c in changes(plan(cfg2, fs), "b")}
    assert set(res) == {f"file {SERVICE_PATH}", f"unit {TIMER}"}
    assert [a.describe() for a in res[f"unit {TIMER}"].actions] == ["run: systemctl daemon-reload"]


def test_null_schedule_removes_the_timer_and_keeps_snapshots() -> None:
    cfg = config()
    fs = {n: installed(cfg, f) if cfg.host(n).has("etcd") else f for n, f in facts(cfg).items()}
    off = config("{schedule: null}")
    steps = plan(off, fs)
    for h in ("a", "b", "c"):
        (c,) = changes(steps, h)
        cmd = c.actions[0].describe()
        assert f"systemctl disable --now {TIMER}" in cmd and "daemon-reload" in cmd
        assert "/var/backups/etcd" not in cmd  # snapshots stay
    # once removed: nothing left to do, and the reason says so
    steps = plan(off, facts(off))
    assert changes(steps) == []
    assert {s.host for s in steps} == {"a", "b", "c"}


def test_host_losing_the_etcd_role_loses_its_timer() -> None:
    cfg = config()
    fs = facts(cfg)
    fs["w"] = installed(cfg, fs["w"])
    (c,) = changes(plan(cfg, fs), "w")
    assert "no longer has the etcd role" in c.why


def test_multiline_schedule_is_a_warning_not_an_injected_unit_line() -> None:
    cfg = config()
    bad = cfg.model_copy(update={"etcd": cfg.etcd.model_copy(update={
        "backup": cfg.etcd.backup.model_copy(update={"schedule": "daily\nExecStart=/bin/evil"})})})
    steps = plan(bad, facts(bad))
    assert changes(steps) == []
    assert all(isinstance(s, NoChange) and s.warning for s in steps)


# --------------------------------------------------------------------------- retention


def names(n: int, start: int = 0) -> list[str]:
    return [f"home-a-202611{1 + (start + i) // 24:02d}T{(start + i) % 24:02d}0000Z.db"
            for i in range(n)]


def test_select_expired_keeps_the_newest_keep() -> None:
    snaps = [(n, 10) for n in names(6)]
    assert select_expired(snaps, keep=3, max_bytes=10**9) == names(3)


def test_select_expired_respects_max_bytes_oldest_first() -> None:
    snaps = list(zip(names(4), [40, 30, 20, 10], strict=True))
    assert select_expired(snaps, keep=10, max_bytes=35) == names(2)  # 20 + 10 stay
    assert select_expired(snaps, keep=10, max_bytes=60) == names(1)  # 30 + 20 + 10 stay
    assert select_expired(snaps, keep=10, max_bytes=5) == names(3)  # the newest stays anyway


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=20), st.integers(1, 10),
       st.integers(1, 5000))
def test_select_expired_invariants(sizes: list[int], keep: int, max_bytes: int) -> None:
    snaps = list(zip(names(len(sizes)), sizes, strict=True))
    gone = select_expired(snaps, keep, max_bytes)
    kept = [(n, s) for n, s in snaps if n not in gone]
    assert kept and kept[-1] == snaps[-1]  # the newest always stays
    assert len(kept) <= keep
    assert sum(s for _, s in kept) <= max_bytes or len(kept) == 1
    assert gone == sorted(gone) and set(gone) == {n for n, _ in snaps[: len(gone)]}  # oldest first


FAKE_ETCDCTL = """#!/bin/bash
case "$1 $2" in
  "snapshot save") head -c "${FAKE_SIZE:-100}" /dev/zero > "$3" ;;
  "endpoint status") echo '"DBSize" : 100' ;;
  *) echo "fake etcdctl: $*" >&2; exit 1 ;;
esac
"""
FAKE_ETCDUTL = """#!/bin/bash
echo '{"hash":1,"revision":7,"totalKey":3,"totalSize":100}'
"""


def run_script(tmp: Path, snaps: dict[str, int], *, size: int, keep: int, max_bytes: int,
               free: int | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Run the real backup script with fake etcdctl/etcdutl (and df) on PATH, in tmp."""
    bin_dir, backups = tmp / "bin", tmp / "backups"
    bin_dir.mkdir(exist_ok=True)
    backups.mkdir(exist_ok=True, mode=0o700)
    fakes = {"etcdctl": FAKE_ETCDCTL, "etcdutl": FAKE_ETCDUTL}
    if free is not None:
        fakes["df"] = ("#!/bin/bash\necho 'Filesystem 1-blocks Used Available Capacity Mounted'\n"
                       f"echo 'fake 1 1 {free} 1% /'\n")
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for n, s in snaps.items():
        (backups / n).write_bytes(b"x" * s)
    (tmp / "etcdctl.env").write_text("")
    script = tmp / "homekube-etcd-backup"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOMEKUBE_BACKUP_DIR": str(backups),
           "HOMEKUBE_BACKUP_KEEP": str(keep), "HOMEKUBE_BACKUP_MAX_BYTES": str(max_bytes),
           "HOMEKUBE_BACKUP_PREFIX": "home-a", "HOMEKUBE_ETCDCTL_ENV": str(tmp / "etcdctl.env"),
           "FAKE_SIZE": str(size)}
    cp = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60,
                        check=False)
    left = {p.name: p.stat().st_size for p in backups.iterdir() if not p.name.startswith(".")}
    return cp, left


@pytest.mark.parametrize(("sizes", "keep", "max_bytes"), [
    ([10, 10, 10, 10, 10], 3, 10_000),   # count wins
    ([50, 40, 30, 20], 10, 75),          # bytes win
    ([50, 40, 30, 20], 2, 35),           # both
    ([], 3, 1000),                       # first snapshot
])
def test_script_retention_matches_select_expired(tmp_path: Path, sizes: list[int], keep: int,
                                                 max_bytes: int) -> None:
    old = dict(zip(names(len(sizes)), sizes, strict=True))  # all in Nov 2026, before "now"
    cp, left = run_script(tmp_path, old, size=15, keep=keep, max_bytes=max_bytes)
    assert cp.returncode == 0, cp.stderr
    (new,) = set(left) - set(old)
    assert new.startswith("home-a-") and left[new] == 15
    expected_gone = select_expired([*old.items(), (new, 15)], keep, max_bytes)
    assert sorted(set(old) - set(left)) == expected_gone
    assert "saved" in cp.stdout and "kept" in cp.stdout
    assert stat.S_IMODE((tmp_path / "backups" / new).stat().st_mode) == 0o600


def test_script_skips_when_disk_is_short(tmp_path: Path) -> None:
    old = dict(zip(names(2), [400, 500], strict=True))
    cp, left = run_script(tmp_path, old, size=15, keep=3, max_bytes=10**6, free=999)
    assert cp.returncode == 75
    assert "SKIPPED" in cp.stderr and "need 1000" in cp.stderr
    assert left == old


def test_script_refuses_a_snapshot_above_max_bytes(tmp_path: Path) -> None:
    old = dict(zip(names(2), [10, 10], strict=True))
    cp, left = run_script(tmp_path, old, size=500, keep=3, max_bytes=100)
    assert cp.returncode == 1 and "above maxBytes" in cp.stderr
    assert left == old  # nothing deleted, nothing partial left


# ----------------------------------------------------------------------------- restore


def snapshot(tmp: Path, body: bytes = b"\0" * 4096,
             sidecar: dict[str, object] | None = None) -> Path:
    p = tmp / "home-20261125T000000Z.db"
    p.write_bytes(body + hashlib.sha256(body).digest())
    if sidecar is not None:
        p.with_suffix(".json").write_text(json.dumps(sidecar))
    return p


def test_verify_trailer_and_inspect(tmp_path: Path) -> None:
    p = snapshot(tmp_path, sidecar={"revision": 9, "keys": 1000, "totalKey": 1200, "member": "b"})
    ok, sha = verify_trailer(p)
    assert ok and sha == hashlib.sha256(p.read_bytes()).hexdigest()
    s = inspect(p)
    assert (s.revision, s.keys, s.total_keys, s.member) == (9, 1000, 1200, "b")
    data = bytearray(p.read_bytes())
    data[10] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="not an intact etcd snapshot"):
        inspect(p)


def test_inspect_refuses_a_file_its_sidecar_disowns(tmp_path: Path) -> None:
    p = snapshot(tmp_path, sidecar={"sha256": "0" * 64})
    with pytest.raises(UsageError, match="differs from its sidecar"):
        inspect(p)


def test_restore_plan_waves_and_commands(tmp_path: Path) -> None:
    cfg = config()
    snap = Snapshot(tmp_path / "x.db", 4128, "ab" * 32, revision=9, keys=1000, total_keys=1200)
    p = restore_plan(cfg, snap, "20261125T000000Z")
    waves = p.phases[0].waves
    assert [sorted(c.host for c in w) for w in waves] == [
        ["a", "b", "c"], ["a"], ["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["a"], ["a"]]
    assert [str(w[0].order) for w in waves] == [
        "restore data", "stop control plane", "stop etcd", "swap data", "start etcd", "verify",
        "start control plane"]
    stop = waves[1][0].actions[0].describe()
    for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f"/etc/kubernetes/manifests/{c}.yaml" in stop
        assert f"/etc/kubernetes/{c}.yaml.stopped-by-homekube-20261125T000000Z" in stop
        assert f"/etc/kubernetes/{c}.yaml.stopped-by-homekube-20261125T000000Z" in waves[6][0].actions[0].describe()
    # pgrep sees 15 characters of a process name: kube-controller-manager is kube-controller
    assert "pgrep -x 'kube-apiserver|kube-controller|kube-scheduler'" in stop
    restore = next(c for c in waves[0] if c.host == "b")
    cmd = restore.actions[0].describe()
    ic = ("a=https://192.0.2.11:2380,b=https://192.0.2.12:2380,c=https://192.0.2.13:2380")
    for part in ("--name 'b'", f"--initial-cluster '{ic}'",
                 "--initial-advertise-peer-urls 'https://192.0.2.12:2380'",
                 "--initial-cluster-token 'homekube-home'", "--data-dir '/var/lib/etcd.restore'",
                 f"--bump-revision {BUMP} --mark-compacted", "ab" * 32):
        assert part in cmd, part
    assert "restoring without it" in cmd  # Kubernetes off: an old etcdutl may restore unbumped
    swap = next(c for c in waves[3] if c.host == "b")
    assert "/var/lib/etcd.before-restore-20261125T000000Z" in swap.actions[0].describe()
    assert "chown -R etcd:etcd" in swap.actions[0].describe()
    (verify,) = waves[5]
    assert '"$count" -ge 1000' in verify.actions[0].describe()
    assert '"$rev" -ge 9' in verify.actions[0].describe()


def test_restore_refuses_unbumped_restore_when_kubernetes_runs(tmp_path: Path) -> None:
    cfg = config(kubernetes=True)
    p = restore_plan(cfg, Snapshot(tmp_path / "x.db", 1, "00" * 32), "s")
    cmd = p.phases[0].waves[0][0].actions[0].describe()
    assert "has no --bump-revision" in cmd and "exit 1" in cmd


def test_restored_config_is_what_the_etcd_planner_keeps(tmp_path: Path) -> None:
    """After restore, `plan` must find etcd.conf.yml unchanged (the bootstrap keys are kept)."""
    cfg = config()
    p = restore_plan(cfg, Snapshot(tmp_path / "x.db", 1, "00" * 32), "s")
    for h in cfg.etcd_hosts:
        (w,) = [a for c in p.changes if c.host == h.name for a in c.actions
                if isinstance(a, WriteFile)]
        assert (w.path, w.mode, w.owner, w.group) == (r.CONFIG_PATH, 0o644, "root", "etcd")
        keep = r.parse_bootstrap(w.content)
        assert keep["initial-cluster-state"] == "new"
        # what EtcdPhase renders for an initialised member, whatever members it would pass
        again = r.member_config(cfg, h, members=[("x", "https://192.0.2.99:2380")],
                                state="existing", keep_bootstrap=keep)
        assert r.config_file(again) == w.content


def test_describe_lists_numbered_steps(tmp_path: Path) -> None:
    cfg = config()
    snap = Snapshot(tmp_path / "x.db", 4128, "ab" * 32, revision=9, keys=1000, member="b")
    text = describe(restore_plan(cfg, snap, "S"), snap)
    lines = text.splitlines()
    assert "revision 9, 1000 live keys, taken from b" in lines[0]
    assert lines[1] == "upload it to a, b, c, then:"
    assert lines[2].startswith("  1. a, b, c: restore the snapshot into /var/lib/etcd.restore")
    assert lines[3].startswith("  2. a: stop kube-apiserver, kube-controller-manager and kube-scheduler")
    assert lines[4].startswith("  3. a, b, c: stop etcd")
    assert lines[-1].startswith("  7. a: start the control plane again")
    k8s = config(kubernetes=True)
    assert describe(restore_plan(k8s, snap, "S"), snap, k8s).splitlines()[-1].startswith(
        "then wait (up to 900 s) for the API, kube-controller-manager, kube-scheduler")


def test_describe_groups_and_picks_by_identity_not_text(tmp_path: Path) -> None:
    cfg = config()
    snap = Snapshot(tmp_path / "x.db", 4128, "ab" * 32, revision=9, keys=1000, member="b")
    p = restore_plan(cfg, snap, "S")
    # every host gets its own wording: grouping and the upload line must not depend on it
    p.phases = [replace(ph, steps=tuple(
        replace(c, resource=f"{c.resource} on {c.host}", summary=f"{c.summary} [{c.host}]")
        if isinstance(c, Change) else c for c in ph.steps)) for ph in p.phases]
    lines = describe(p, snap).splitlines()
    assert lines[1] == "upload it to a, b, c, then:"
    assert lines[2].startswith("  1. a, b, c: restore the snapshot into /var/lib/etcd.restore [a]")
    assert lines[4].startswith("  3. a, b, c: stop etcd [a]")


# ------------------------------------------------------------------------------- renew


def fake_change(host: str, phase: str, resource: str, summary: str, why: str,
                key: ChangeKey | None = None) -> Change:
    return Change(host, phase, resource, summary, why, (Run("true"),), key=key)


def renewal_changes(word: Callable[[str], str] = lambda s: s) -> list[Change]:
    """Issues and certificate restarts for hosts a and b, their display text passed through `word`."""
    restart_why = "certificates changed; one member at a time keeps quorum"
    cs = [fake_change(h, "etcd-pki", word(f"cert etcd/{k}"), word(f"issue etcd/{k} (CN {h})"), word("expires"),
                      ChangeKey("cert", f"etcd/{k}", Act.ISSUE))
          for h in ("a", "b") for k in ("server", "peer")]
    cs += [replace(fake_change(h, "etcd", word("unit etcd.service"), word("restart etcd"), word(restart_why),
                               restart_key(["certificates"])),
                   order=RESTART.turn(i)) for i, h in enumerate(("a", "b"))]
    return cs


def test_rolling_plan_renews_member_by_member() -> None:
    cs = renewal_changes()
    p = Plan("home", ["a", "b"], [PhasePlan("etcd-pki", "", tuple(cs[:4])),
                                  PhasePlan("etcd", "", tuple(cs[4:]))])
    out = rolling_plan(p, ["b", "a"])
    wave = wave_of(out.changes)
    assert [(c.host, wave(c), c.summary.split(" (")[0]) for c in out.changes] == [
        ("b", 0, "issue etcd/server"), ("b", 0, "issue etcd/peer"), ("b", 1, "restart etcd"),
        ("a", 2, "issue etcd/server"), ("a", 2, "issue etcd/peer"), ("a", 3, "restart etcd")]


@pytest.mark.parametrize("word", [str.upper, lambda s: f"reworded: {s[::-1]}"])
def test_rolling_plan_selects_by_identity_not_text(word: Callable[[str], str]) -> None:
    cs = renewal_changes(word)
    p = Plan("home", ["a", "b"], [PhasePlan("etcd-pki", "", tuple(cs[:4])),
                                  PhasePlan("etcd", "", tuple(cs[4:]))])
    out = rolling_plan(p, ["b", "a"])
    wave = wave_of(out.changes)
    assert [(c.host, wave(c), c.key) for c in out.changes] == [
        (h, w, k) for i, h in enumerate(("b", "a"))
        for w, k in ((2 * i, ChangeKey("cert", "etcd/server", Act.ISSUE)),
                     (2 * i, ChangeKey("cert", "etcd/peer", Act.ISSUE)),
                     (2 * i + 1, restart_key(["certificates"])))]


def test_rolling_plan_refuses_a_restart_with_other_causes_whatever_its_text() -> None:
    # worded exactly like a certificate restart, but caused by a config change too
    restart = fake_change("a", "etcd", "unit etcd.service", "restart etcd",
                          "certificates changed; one member at a time keeps quorum",
                          restart_key(["config", "certificates"]))
    p = Plan("home", ["a"], [PhasePlan("etcd", "", (restart,))])
    with pytest.raises(RefusedError, match="other etcd changes are pending"):
        rolling_plan(p, ["a"])


def test_restart_key_tells_causes_apart() -> None:
    assert restart_key(["certificates"]) == ChangeKey("unit", "etcd.service", Act.RESTART,
                                                      frozenset({"certificates"}))
    assert restart_key(["certificates", "config"]) != restart_key(["certificates"])


def test_rolling_plan_refuses_other_pending_changes() -> None:
    drift = fake_change("a", "etcd", "file /etc/etcd/etcd.conf.yml", "update", "content differs")
    restart = fake_change("a", "etcd", "unit etcd.service", "restart etcd",
                          "config, certificates changed; one member at a time keeps quorum",
                          restart_key(["config", "certificates"]))
    p = Plan("home", ["a"], [PhasePlan("etcd", "", (drift, restart))])
    with pytest.raises(RefusedError, match="other etcd changes are pending"):
        rolling_plan(p, ["a"])


def test_with_window_widens_only_the_renewal_window() -> None:
    cfg = config()
    wide = with_window(cfg, 400)
    assert wide.etcd.renew_within_days == 400 and cfg.etcd.renew_within_days == 30
    assert wide.model_copy(update={"etcd": cfg.etcd}) == cfg


def test_sidecar_fields_are_json(tmp_path: Path) -> None:
    from homekube.ops.backup import BackupResult

    b = BackupResult(tmp_path / "home-x.db", tmp_path / "home-x.json", "home", "a", 5, 9, 3, 1,
                     "f" * 64, 100, "3.5.1", "2026-11-25T00:00:00+00:00", 0.25)
    d = b.sidecar_json()
    assert d["file"] == "home-x.db" and d["keys"] == 3 and d["totalKey"] == 9
    assert json.loads(json.dumps(d)) == d
    assert os.fspath(b.path).endswith(".db")


# ------------------------------------------------------------------------- CLI, transport


def test_restore_without_yes_prints_the_plan_and_touches_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from homekube.cli.main import app

    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(textwrap.dedent("""\
        name: home
        kubernetes: {enabled: false}
        ssh: {key: /nonexistent/key, knownHosts: /nonexistent/known_hosts}
        hosts:
          - {name: a, address: 192.0.2.11, roles: [control-plane, etcd]}
        """))
    snap = snapshot(tmp_path, sidecar={"cluster": "home", "revision": 3, "keys": 2})
    res = CliRunner().invoke(app, ["restore", str(snap), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "1. a: restore the snapshot into /var/lib/etcd.restore" in res.output
    assert res.output.rstrip().endswith("run again with --yes to restore")
    other = snapshot(tmp_path, sidecar={"cluster": "elsewhere"})
    res = CliRunner().invoke(app, ["restore", str(other), "--config", str(cfg)])
    assert res.exit_code == 1 and "not 'home'" in res.output


def test_default_get_file_is_base64_and_private(tmp_path: Path) -> None:
    import asyncio
    import base64 as b64

    from homekube.errors import TransferError
    from homekube.transport.base import ExecResult
    from homekube.transport.fake import FakeTransport

    data = bytes(range(256)) * 10
    t = FakeTransport("a", lambda script: ExecResult(0, b64.b64encode(data).decode(), ""))
    dest = tmp_path / "copy"
    asyncio.run(t.get_file("/var/tmp/x y", dest))
    assert dest.read_bytes() == data and stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert t.scripts == ["base64 -w0 '/var/tmp/x y'"]
    bad = FakeTransport("a", lambda script: ExecResult(1, "", "No such file"))
    with pytest.raises(TransferError, match="No such file") as e:
        asyncio.run(bad.get_file("/nope", tmp_path / "n"))
    assert e.value.host == "a"
