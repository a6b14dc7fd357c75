"""The one etcd snapshot script, and the pure rules and parsers around it.

The backup timer installs it as a file and runs it with its settings in the environment;
`homekube backup` sends the same text with ``HOMEKUBE_BACKUP_ONCE=1`` in front. Both paths
save and inspect the snapshot with the same `snapshot` function; they differ in where it goes:

* timer: into ``$HOMEKUBE_BACKUP_DIR`` under a host lock, after a free-space check, followed
  by retention (:func:`select_expired` is the same rule in Python; the unit tests run the
  script against it):
  keep the `keep` newest; the kept ones never add up to more than `maxBytes` (oldest go
  first; a single snapshot above it is not kept: exit 1); old snapshots are only deleted
  after a new one was verified; nothing is started with less than 2 × the last snapshot's
  size free (2 × etcd's database before the first), the run says ``SKIPPED`` and exits 75.
* once: into a fresh temp dir under /var/tmp, printing ``key=value`` lines
  (:func:`parse_report`) for the operator to copy the file and check it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from homekube.etcd import api
from homekube.etcd.layout import ENV_FILE
from homekube.shell import script

#: exit status of a run skipped for lack of disk space (EX_TEMPFAIL)
EXIT_NO_SPACE = 75
#: the temp dirs `homekube backup` leaves behind on a host start with this
ONCE_DIR_PREFIX = "/var/tmp/homekube-backup."

#: the script as installed (two paths filled in from the etcd layout)
SCRIPT = script("etcd-backup.sh").replace("@ENV_FILE@", ENV_FILE).replace("@ONCE_DIR@", ONCE_DIR_PREFIX)


def once_script() -> str:
    """The script as `homekube backup` sends it: one snapshot into a temp dir, reported."""
    return "HOMEKUBE_BACKUP_ONCE=1\n" + SCRIPT


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


@dataclass(frozen=True)
class Report:
    """What the script says about a snapshot it took in `once` mode."""

    dir: str
    file: str
    status: api.SnapshotStatus
    keys: int | None  # live keys at the snapshot's revision (unknown when the count failed)
    sha256: str
    size: int
    version: str


def parse_kv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.isidentifier():
            out[k] = v.strip()
    return out


def parse_report(text: str) -> Report:
    """Read the script's `once` output; ValueError names what is missing."""
    kv = parse_kv(text)
    status = api.parse_snapshot_status(api.parse_json(kv.get("status", "")))
    if status is None:
        raise ValueError(f"no snapshot status in {kv.get('status', '')!r}")
    try:
        size, sha = int(kv["size"]), kv["sha256"]
    except (KeyError, ValueError) as e:
        raise ValueError(f"no size or sha256 ({e})") from None
    keys = int(kv["keys"]) if kv.get("keys", "").isdigit() else None
    return Report(kv.get("dir", ""), kv.get("file", ""), status, keys, sha, size,
                  kv.get("version", ""))


# ------------------------------------------------------------------------------- verify

#: the scratch copies `homekube backup --verify` makes on a host start with this
VERIFY_DIR_PREFIX = "/var/tmp/homekube-verify."


def verify_script(upload: str, sha256: str) -> str:
    """Restore the uploaded snapshot into a scratch data dir, start a throwaway etcd on it
    (loopback ports, plain HTTP, its own member name) and count its keys; the cluster's etcd
    is not touched. Prints `keys=`, `revision=`, `seconds=`; everything is removed on exit."""
    return f"""set -euo pipefail
export LC_ALL=C
snap={upload}
d=$(mktemp -d {VERIFY_DIR_PREFIX}XXXXXX)
pid=
cleanup() {{
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$d" "$snap"
}}
trap cleanup EXIT
[ "$(sha256sum < "$snap" | cut -d' ' -f1)" = {sha256} ] || \
  {{ echo "the upload differs from the local file" >&2; exit 1; }}
free_port() {{
  while :; do p=$((20000 + RANDOM % 30000)); [ -z "$(ss -Hltn "sport = :$p")" ] && {{ echo $p; return; }}; done
}}
cp=$(free_port); pp=$(free_port)
while [ "$pp" = "$cp" ]; do pp=$(free_port); done
peer=http://127.0.0.1:$pp
start=$SECONDS
if ! etcdutl snapshot restore "$snap" --data-dir "$d/data" --name verify \\
    --initial-cluster verify=$peer --initial-advertise-peer-urls $peer > "$d/restore.log" 2>&1; then
  echo "etcdutl snapshot restore failed:" >&2; tail -n 5 "$d/restore.log" >&2; exit 1
fi
etcd --name verify --data-dir "$d/data" --listen-client-urls http://127.0.0.1:$cp \\
  --advertise-client-urls http://127.0.0.1:$cp --listen-peer-urls $peer \\
  --initial-advertise-peer-urls $peer --initial-cluster verify=$peer > "$d/etcd.log" 2>&1 &
pid=$!
ctl() {{ env -u ETCDCTL_CACERT -u ETCDCTL_CERT -u ETCDCTL_KEY -u ETCDCTL_ENDPOINTS \\
  etcdctl --endpoints=http://127.0.0.1:$cp --dial-timeout=2s --command-timeout=30s "$@"; }}
end=$((SECONDS + 120))
until ctl endpoint health >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || {{ echo "the scratch etcd exited:" >&2; tail -n 5 "$d/etcd.log" >&2; exit 1; }}
  [ "$SECONDS" -lt "$end" ] || {{ echo "the scratch etcd did not become healthy in 120 s" >&2; exit 1; }}
  sleep 0.2
done
fld() {{ awk -F' : ' -v k="\\"$1\\"" '$1 == k {{gsub(/"/, "", $2); print $2}}'; }}
printf 'keys=%s\\n' "$(ctl get '' --prefix --count-only -w fields | fld Count)"
printf 'revision=%s\\n' "$(ctl endpoint status -w fields | fld Revision)"
printf 'seconds=%s\\n' "$((SECONDS - start))"
"""


@dataclass(frozen=True)
class Verified:
    keys: int
    revision: int


def parse_verify(text: str) -> Verified:
    """Read :func:`verify_script`'s output; ValueError when a count is missing."""
    kv = parse_kv(text)
    try:
        return Verified(int(kv["keys"]), int(kv["revision"]))
    except (KeyError, ValueError):
        raise ValueError(f"no key count or revision in {text.strip()[-200:]!r}") from None


def verify_problems(got: Verified, keys: int | None, revision: int | None) -> list[str]:
    """What differs between the restored copy and the sidecar's record (empty: it matches)."""
    out = []
    if keys is not None and got.keys != keys:
        out.append(f"{got.keys} live keys restored, the backup recorded {keys}")
    if revision is not None and got.revision != revision:
        out.append(f"revision {got.revision} restored, the backup recorded {revision}")
    if got.keys == 0:
        out.append("the restored copy holds no key at all")
    return out
