"""Scheduled etcd snapshots on every etcd host: a script, a oneshot service and its timer (pure).

`etcd.backup.schedule` (a systemd OnCalendar= expression) installs on each etcd member

    /usr/local/sbin/homekube-etcd-backup          the snapshot + retention script (below)
    /etc/systemd/system/homekube-etcd-backup.service   Type=oneshot, settings as Environment=
    /etc/systemd/system/homekube-etcd-backup.timer     OnCalendar=<schedule>, Persistent=true

and keeps snapshots in `etcd.backup.dir` (0700 root). `schedule: null`, or a host losing the
etcd role, disables the timer and removes the three files; the snapshots already taken stay.

The script, its retention rule and its exit statuses are :mod:`homekube.etcd.snapshot`'s
(`homekube backup` runs the same script once).

The timer uses `AccuracySec=1s`: systemd's default (1 min) would coalesce short schedules.

`homekube status` reads, in the one facts exec, the newest snapshot in the directory (name,
size, mtime), the `.last` file the script writes after each kept snapshot (its revision and
key count), the service's last result and the schedule's period as systemd computes it
(`systemd-analyze calendar --iterations=2`: the gap between the next two elapses). It warns
when the newest snapshot is older than twice that period, when the last run failed, and when
the timer is not running.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from homekube.components.base import Context
from homekube.config.model import ClusterConfig, HostSpec
from homekube.etcd.layout import ENV_FILE
from homekube.etcd.snapshot import SCRIPT
from homekube.facts.base import Fact, shell_quote
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.plan.model import Change, NoChange, Run, Step, WriteFile
from homekube.plan.resources import file_step, unit_step

SCRIPT_PATH = "/usr/local/sbin/homekube-etcd-backup"
SERVICE = "homekube-etcd-backup.service"
TIMER = "homekube-etcd-backup.timer"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"

def _systemd_value(s: str) -> str:
    """Quote an Environment= assignment: `%` is a specifier, `\\` and `"` escape."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def snapshot_prefix(cfg: ClusterConfig, h: HostSpec) -> str:
    return f"{cfg.name}-{h.name}"


def service_unit(cfg: ClusterConfig, h: HostSpec) -> bytes:
    b = cfg.etcd.backup
    env = {
        "HOMEKUBE_BACKUP_DIR": b.dir,
        "HOMEKUBE_BACKUP_KEEP": str(b.keep),
        "HOMEKUBE_BACKUP_MAX_BYTES": str(b.max_bytes),
        "HOMEKUBE_BACKUP_PREFIX": snapshot_prefix(cfg, h),
        "HOMEKUBE_ETCDCTL_ENV": ENV_FILE,
    }
    lines = [
        "# Managed by homekube: one etcd snapshot with retention (etcd.backup in cluster.yaml).",
        "[Unit]",
        "Description=homekube: etcd snapshot with retention",
        "After=etcd.service",
        "",
        "[Service]",
        "Type=oneshot",
        *(f"Environment={_systemd_value(f'{k}={v}')}" for k, v in env.items()),
        f"ExecStart={SCRIPT_PATH}",
        # a backup must not slow etcd down: lowest CPU and I/O priority that still progresses
        "Nice=10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=7",
        "",
    ]
    return "\n".join(lines).encode()


def timer_unit(schedule: str) -> bytes:
    lines = [
        "# Managed by homekube: etcd.backup.schedule in cluster.yaml.",
        "[Unit]",
        "Description=homekube: scheduled etcd snapshots",
        "",
        "[Timer]",
        f"OnCalendar={schedule}",
        # the default AccuracySec (1 min) would merge short schedules into one run a minute
        "AccuracySec=1s",
        # a run missed while the host was off happens at the next boot
        "Persistent=true",
        f"Unit={SERVICE}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]
    return "\n".join(lines).encode()


def backup_files(cfg: ClusterConfig, h: HostSpec) -> list[tuple[str, bytes]]:
    """(path, content) of every file this phase puts on `h` (for `homekube render`)."""
    schedule = cfg.etcd.backup.schedule
    if not h.has("etcd") or schedule is None or _bad_schedule(schedule):
        return []
    return [(SCRIPT_PATH, SCRIPT.encode()), (SERVICE_PATH, service_unit(cfg, h)),
            (TIMER_PATH, timer_unit(schedule))]


def _bad_schedule(schedule: str) -> str | None:
    if any(ord(c) < 32 for c in schedule) or not schedule.strip():
        return "etcd.backup.schedule must be one line (a systemd OnCalendar= expression)"
    return None


# ---------------------------------------------------------------------------------------------
# what `status` shows


@dataclass(frozen=True)
class BackupFacts:
    """The backup side of one etcd host (the `etcd-backup` fact)."""

    now: float | None = None  # the host's clock (epoch seconds): ages are measured on the host
    count: int = 0  # snapshots kept in the directory
    newest: str | None = None  # newest snapshot's file name
    newest_size: int | None = None
    newest_mtime: float | None = None  # epoch seconds
    revision: int | None = None  # from `.last`, when it names the newest snapshot
    keys: int | None = None
    result: str | None = None  # the service's Result= (success, exit-code, ...)
    exit_status: int | None = None  # ExecMainStatus of the last run
    period: float | None = None  # seconds between the schedule's next two elapses


def _int(v: str | None) -> int | None:
    return int(v) if v is not None and v.strip().lstrip("-").isdigit() else None


def _float(v: str | None) -> float | None:
    try:
        return float(v) if v else None
    except ValueError:
        return None


def _utc(text: str) -> datetime | None:
    """`Sat 2026-11-28 00:00:00 UTC` (systemd-analyze calendar's form) -> aware datetime."""
    parts = text.split()
    if len(parts) < 3:
        return None
    try:
        return datetime.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_backup_fact(text: str) -> BackupFacts:
    kv: dict[str, str] = {}
    elapses: list[datetime] = []
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if not sep:
            continue
        k, v = k.strip(), v.strip()
        if k == "elapse":
            t = _utc(v)
            if t is not None:
                elapses.append(t)
        else:
            kv[k] = v
    newest = kv.get("newest", "").split(maxsplit=2)  # "<mtime> <size> <name>"
    name = newest[2] if len(newest) == 3 else None
    same = name is not None and kv.get("last.file") == name
    period = (elapses[1] - elapses[0]).total_seconds() if len(elapses) >= 2 else None
    return BackupFacts(
        now=_float(kv.get("now")),
        count=_int(kv.get("count")) or 0,
        newest=name,
        newest_size=_int(newest[1]) if name else None,
        newest_mtime=_float(newest[0]) if name else None,
        revision=_int(kv.get("last.revision")) if same else None,
        keys=_int(kv.get("last.keys")) if same else None,
        result=kv.get("result") or None,
        exit_status=_int(kv.get("status")),
        period=period if period and period > 0 else None,
    )


def backup_fact(cfg: ClusterConfig, h: HostSpec) -> Fact[BackupFacts]:
    d = shell_quote(cfg.etcd.backup.dir)
    prefix = shell_quote(snapshot_prefix(cfg, h))
    schedule = cfg.etcd.backup.schedule or ""
    cal = (f"TZ=UTC systemd-analyze calendar --iterations=2 {shell_quote(schedule)} "
           "| sed -n 's/^ *\\(Next elapse\\|Iter\\. #2\\): /elapse=/p'\n"
           if schedule and not _bad_schedule(schedule) else "")
    cmd = (
        'kv() { printf "%s=%s\\n" "$1" "$2"; }\n'
        'kv now "$(date +%s)"\n'
        f"if [ -d {d} ]; then\n"
        f"  s=$(find {d} -maxdepth 1 -type f -name {prefix}'-*.db' -printf '%T@ %s %f\\n')\n"
        '  kv count "$(printf \'%s\' "$s" | grep -c .)"\n'
        '  kv newest "$(printf \'%s\\n\' "$s" | sort -n | tail -n 1)"\n'
        f"  [ -f {d}/.last ] && sed 's/^/last./' {d}/.last\n"
        "fi\n"
        f'kv result "$(systemctl show -p Result --value {SERVICE})"\n'
        f'kv status "$(systemctl show -p ExecMainStatus --value {SERVICE})"\n'
        + cal
    )
    return Fact("etcd-backup", cmd, parse_backup_fact)


def backup_facts(f: HostFacts) -> BackupFacts:
    v = f.extra.get("etcd-backup")
    return v if isinstance(v, BackupFacts) else BackupFacts()


def fmt_age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def backup_status(cfg: ClusterConfig, h: HostSpec, f: HostFacts) -> dict[str, Any]:
    """One etcd host's row of `status`: the newest scheduled snapshot and what is wrong (pure)."""
    b = backup_facts(f)
    timer = f.unit(TIMER)
    row: dict[str, Any] = {"name": h.name, "schedule": cfg.etcd.backup.schedule,
                           "timer": timer.active if timer.exists else "not installed",
                           "snapshots": b.count, "file": b.newest, "size": b.newest_size,
                           "revision": b.revision, "keys": b.keys, "lastResult": b.result,
                           "periodSeconds": b.period, "ageSeconds": None, "warnings": []}
    warn: list[str] = row["warnings"]
    if cfg.etcd.backup.schedule is None:
        return row
    if b.newest_mtime is not None and b.now is not None:
        row["ageSeconds"] = max(0.0, b.now - b.newest_mtime)
    if not timer.is_active:
        warn.append(f"backup timer {TIMER} is {row['timer']}: no snapshots are being taken")
    if b.result not in (None, "success"):
        code = f", exit status {b.exit_status}" if b.exit_status else ""
        warn.append(f"the last scheduled backup failed ({b.result}{code}): "
                    f"journalctl -u {SERVICE}")
    if b.period is not None:
        limit = 2 * b.period
        age = row["ageSeconds"]
        if age is not None and age > limit:
            warn.append(f"the newest snapshot is {fmt_age(age)} old, more than twice the schedule "
                        f"({fmt_age(b.period)})")
    return row


class EtcdBackupPhase:
    name = "etcd-backup"
    title = "etcd backup timer"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        # every host: one that lost the etcd role may still carry a timer to remove
        return Probes(
            files={SCRIPT_PATH: False, SERVICE_PATH: False, TIMER_PATH: False,
                   config.etcd.backup.dir: False},
            units={TIMER, SERVICE},
            extra=[backup_fact(config, host)] if host.has("etcd") else [],
        )

    def plan(self, ctx: Context) -> list[Step]:
        schedule = ctx.config.etcd.backup.schedule
        steps: list[Step] = []
        for h in ctx.hosts():
            f = ctx.facts[h.name]
            if h.has("etcd") and schedule is not None:
                problem = _bad_schedule(schedule)
                if problem:
                    steps.append(NoChange(h.name, self.name, f"timer {TIMER}", problem,
                                          warning=True))
                    continue
                steps += self._install(ctx, h, f, schedule)
            else:
                steps += self._remove(h, f, etcd=h.has("etcd"))
        return steps

    def _install(self, ctx: Context, h: HostSpec, f: HostFacts, schedule: str) -> list[Step]:
        ph = self.name
        b = ctx.config.etcd.backup
        steps: list[Step] = []
        dd = f.file(b.dir)
        owned = dd is not None and (dd.owner, dd.group) == ("root", "root")
        if dd is None or dd.kind != "dir" or dd.mode != 0o700 or not owned:
            steps.append(Change(h.name, ph, f"dir {b.dir}", f"create {b.dir} (0700 root)",
                                "snapshots hold every secret in etcd",
                                (Run(f"install -d -m 0700 -o root -g root {shell_quote(b.dir)}"),)))
        else:
            steps.append(NoChange(h.name, ph, f"dir {b.dir}", f"{b.dir} is 0700 root"))
        steps.append(file_step(f, ph, WriteFile(SCRIPT_PATH, SCRIPT.encode(), 0o755),
                               "snapshots locally, keeps `keep` newest within `maxBytes`"))
        service = file_step(f, ph, WriteFile(SERVICE_PATH, service_unit(ctx.config, h), 0o644),
                            "runs the backup script once with the settings from cluster.yaml")
        steps.append(service)
        timer = file_step(f, ph, WriteFile(TIMER_PATH, timer_unit(schedule), 0o644),
                          f"etcd.backup.schedule is {schedule!r}")
        if isinstance(timer, Change):
            # systemd ignores a timer whose OnCalendar it cannot parse: refuse it up front
            bad = f"etcd.backup.schedule {schedule!r} is not a valid OnCalendar= expression"
            check = Run(
                f"systemd-analyze calendar {shell_quote(schedule)} >/dev/null || "
                f"{{ echo {shell_quote(bad)} >&2; exit 1; }}",
                "check etcd.backup.schedule with systemd-analyze calendar",
            )
            timer = replace(timer, actions=(check, *timer.actions))
        steps.append(timer)
        units_changed = isinstance(service, Change) or isinstance(timer, Change)
        unit = unit_step(f, ph, TIMER, why="snapshots on schedule",
                         restart_because=["timer"] if isinstance(timer, Change) else [],
                         daemon_reload=units_changed)
        if isinstance(unit, NoChange) and units_changed:
            unit = Change(h.name, ph, f"unit {TIMER}", "reload systemd units",
                          "the backup service changed", (Run("systemctl daemon-reload"),))
        steps.append(unit)
        return steps

    def _remove(self, h: HostSpec, f: HostFacts, *, etcd: bool) -> list[Step]:
        present = [p for p in (TIMER_PATH, SERVICE_PATH, SCRIPT_PATH) if f.file(p) is not None]
        st = f.unit(TIMER)
        if not present and not st.is_active and not (st.exists and st.is_enabled):
            if not etcd:
                return []
            return [NoChange(h.name, self.name, f"timer {TIMER}",
                             "no backup timer (etcd.backup.schedule is null)")]
        why = ("etcd.backup.schedule is null" if etcd else "this host no longer has the etcd role")
        cmd = (f"systemctl disable --now {TIMER} >/dev/null 2>&1 || true; "
               f"rm -f {' '.join(shell_quote(p) for p in present)}; systemctl daemon-reload")
        return [Change(h.name, self.name, f"timer {TIMER}", "remove the etcd backup timer",
                       f"{why}; snapshots already taken are kept", (Run(cmd),))]
