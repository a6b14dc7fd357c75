"""Scheduled etcd snapshots on every etcd host: a script, a oneshot service and its timer (pure).

`etcd.backup.schedule` (a systemd OnCalendar= expression) installs on each etcd member

    /usr/local/sbin/homekube-etcd-backup          the snapshot + retention script (below)
    /etc/systemd/system/homekube-etcd-backup.service   Type=oneshot, settings as Environment=
    /etc/systemd/system/homekube-etcd-backup.timer     OnCalendar=<schedule>, Persistent=true

and keeps snapshots in `etcd.backup.dir` (0700 root). `schedule: null`, or a host losing the
etcd role, disables the timer and removes the three files; the snapshots already taken stay.

Retention (the script implements it; `select_expired` is the same rule in Python, and the
unit tests run the script against it):

* keep the `keep` newest snapshots and delete older ones;
* the kept snapshots never add up to more than `maxBytes`: the oldest go first. A single
  snapshot larger than `maxBytes` is not kept at all (the run fails loudly) rather than
  silently breaking the bound;
* old snapshots are only deleted after a new one was verified, never before;
* no snapshot is started when the filesystem has less than 2 × the last snapshot's size free
  (2 × etcd's database size before the first one): the run logs `SKIPPED: ...` and exits 75,
  so `systemctl --failed` shows it instead of the disk filling up.

The timer uses `AccuracySec=1s`: systemd's default (1 min) would coalesce short schedules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from homekube.components.base import Context
from homekube.components.etcd import ENV_FILE
from homekube.config.model import ClusterConfig, HostSpec
from homekube.facts.base import shell_quote
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.plan.model import Change, NoChange, Run, Step, WriteFile
from homekube.plan.resources import file_step, unit_step

SCRIPT_PATH = "/usr/local/sbin/homekube-etcd-backup"
SERVICE = "homekube-etcd-backup.service"
TIMER = "homekube-etcd-backup.timer"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE}"
TIMER_PATH = f"/etc/systemd/system/{TIMER}"
#: exit status of a run skipped for lack of disk space (EX_TEMPFAIL)
EXIT_NO_SPACE = 75

SCRIPT = r"""#!/bin/bash
# Managed by homekube: snapshot this etcd member into $HOMEKUBE_BACKUP_DIR, then apply
# retention. Run by homekube-etcd-backup.service (its timer) or by hand.
#   keep N newest (HOMEKUBE_BACKUP_KEEP); the kept files never exceed HOMEKUBE_BACKUP_MAX_BYTES
#   (oldest deleted first; a single snapshot above it is not kept: exit 1); nothing is started
#   with less than 2 x the last snapshot's size free (exit 75, "SKIPPED").
set -euo pipefail
umask 077
export LC_ALL=C
dir=${HOMEKUBE_BACKUP_DIR:?HOMEKUBE_BACKUP_DIR is not set}
keep=${HOMEKUBE_BACKUP_KEEP:-7}
max_bytes=${HOMEKUBE_BACKUP_MAX_BYTES:-2147483648}
prefix=${HOMEKUBE_BACKUP_PREFIX:-etcd}
env_file=${HOMEKUBE_ETCDCTL_ENV:-/etc/etcd/etcdctl.env}

log() { printf 'homekube-etcd-backup: %s\n' "$*"; }
fail() { code=$1; shift; printf 'homekube-etcd-backup: %s\n' "$*" >&2; exit "$code"; }
size_of() { stat -c %s "$1"; }
# snapshot names, oldest first (the UTC timestamp in the name sorts)
snapshots() {
    find "$dir" -maxdepth 1 -type f -name "${prefix}-*.db" -printf '%f\n' \
        | grep -E "^${prefix}-[0-9]{8}T[0-9]{6}Z\.db$" | sort || true
}

install -d -m 0700 "$dir"
exec 9>"$dir/.lock"
flock -n 9 || { log "another backup run holds $dir/.lock; skipped"; exit 0; }
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a

last=$(snapshots | tail -n 1)
if [ -n "$last" ]; then
    need=$(( 2 * $(size_of "$dir/$last") )); basis="the last snapshot, $last"
else
    db=$(etcdctl endpoint status -w fields | awk -F' : ' '$1 == "\"DBSize\"" {print $2}')
    need=$(( 2 * ${db:-0} )); basis="etcd's database"
fi
free=$(df -P -B1 "$dir" | awk 'NR == 2 {print $4}')
if [ "$free" -lt "$need" ]; then
    fail 75 "SKIPPED: only $free bytes free in $dir, need $need (2 x $basis); no snapshot taken"
fi

ts=$(date -u +%Y%m%dT%H%M%SZ)
while [ -e "$dir/$prefix-$ts.db" ]; do sleep 1; ts=$(date -u +%Y%m%dT%H%M%SZ); done
part="$dir/.$prefix-$ts.db.part"
trap 'rm -f "$part" "$part.part"' EXIT
if ! out=$(etcdctl snapshot save "$part" 2>&1); then
    fail 1 "etcdctl snapshot save failed: $(printf '%s' "$out" | tail -n 3)"
fi
if command -v etcdutl >/dev/null; then
    st=$(etcdutl snapshot status "$part" -w json)
else
    st=$(etcdctl snapshot status "$part" -w json)
fi
rev=$(printf '%s' "$st" | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
keys=$(printf '%s' "$st" | sed -n 's/.*"totalKey":\([0-9]*\).*/\1/p')
[ -n "$rev" ] || fail 1 "snapshot status could not read $part: $st"
size=$(size_of "$part")
if [ "$size" -gt "$max_bytes" ]; then
    fail 1 "snapshot is $size bytes, above maxBytes ($max_bytes): not kept (etcd.backup.maxBytes)"
fi
mv -f "$part" "$dir/$prefix-$ts.db"
log "saved $dir/$prefix-$ts.db ($size bytes, revision $rev, $keys keys)"

mapfile -t all < <(snapshots)
n=${#all[@]}
i=0
while [ $(( n - i )) -gt "$keep" ]; do
    rm -f "$dir/${all[$i]}"; log "removed ${all[$i]} (keep $keep)"; i=$(( i + 1 ))
done
total=0
for (( j = i; j < n; j++ )); do total=$(( total + $(size_of "$dir/${all[$j]}") )); done
while [ "$total" -gt "$max_bytes" ] && [ $(( n - i )) -gt 1 ]; do
    s=$(size_of "$dir/${all[$i]}")
    rm -f "$dir/${all[$i]}"; total=$(( total - s ))
    log "removed ${all[$i]} (kept snapshots must stay within $max_bytes bytes)"; i=$(( i + 1 ))
done
log "kept $(( n - i )) snapshot(s), $total bytes"
"""


def select_expired(snapshots: Sequence[tuple[str, int]], keep: int, max_bytes: int) -> list[str]:
    """Name the snapshots retention deletes, oldest first; `snapshots` = (name, bytes).

    Names carry a UTC timestamp, so sorting them sorts by age. The newest snapshot is never
    selected (the script refuses to keep one above `max_bytes` before it gets here).
    """
    ordered = sorted(snapshots)
    drop = max(0, len(ordered) - keep)
    out = [name for name, _ in ordered[:drop]]
    kept = ordered[drop:]
    total = sum(size for _, size in kept)
    while total > max_bytes and len(kept) > 1:
        name, size = kept.pop(0)
        out.append(name)
        total -= size
    return out


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


class EtcdBackupPhase:
    name = "etcd-backup"
    title = "etcd backup timer"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        # every host: one that lost the etcd role may still carry a timer to remove
        return Probes(
            files={SCRIPT_PATH: False, SERVICE_PATH: False, TIMER_PATH: False,
                   config.etcd.backup.dir: False},
            units={TIMER, SERVICE},
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
