#!/bin/bash
# Managed by homekube: snapshot this etcd member into $HOMEKUBE_BACKUP_DIR, then apply
# retention. Run by homekube-etcd-backup.service (its timer) or by hand.
#   keep N newest (HOMEKUBE_BACKUP_KEEP); the kept files never exceed HOMEKUBE_BACKUP_MAX_BYTES
#   (oldest deleted first; a single snapshot above it is not kept: exit 1); nothing is started
#   with less than 2 x the last snapshot's size free (exit 75, "SKIPPED").
# With HOMEKUBE_BACKUP_ONCE=1 (`homekube backup`): one snapshot into a new temp dir, reported
# as key=value lines, no retention.
set -euo pipefail
umask 077
export LC_ALL=C
env_file=${HOMEKUBE_ETCDCTL_ENV:-@ENV_FILE@}

log() { printf 'homekube-etcd-backup: %s\n' "$*"; }
fail() { code=$1; shift; printf 'homekube-etcd-backup: %s\n' "$*" >&2; exit "$code"; }
size_of() { stat -c %s "$1"; }
# one value of `etcdctl -w fields` output
field() { awk -F' : ' -v k="\"$1\"" '$1 == k {gsub(/"/, "", $2); print $2}'; }
# save a snapshot into $1 and inspect it: sets st (its JSON status), rev and keys
snapshot() {
    if ! out=$(etcdctl snapshot save "$1" 2>&1); then
        fail 1 "etcdctl snapshot save failed: $(printf '%s' "$out" | tail -n 3)"
    fi
    if command -v etcdutl >/dev/null; then st=$(etcdutl snapshot status "$1" -w json)
    else st=$(etcdctl snapshot status "$1" -w json 2>/dev/null); fi
    rev=$(printf '%s' "$st" | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
    keys=$(printf '%s' "$st" | sed -n 's/.*"totalKey":\([0-9]*\).*/\1/p')
    [ -n "$rev" ] || fail 1 "snapshot status could not read $1: $st"
}
# shellcheck disable=SC1090  # the env file's path is set above, from the etcd layout
load_env() { set -a; . "$env_file"; set +a; }

if [ -n "${HOMEKUBE_BACKUP_ONCE:-}" ]; then
    load_env
    d=$(mktemp -d @ONCE_DIR@XXXXXX)
    printf 'dir=%s\n' "$d"
    f="$d/snapshot.db"
    snapshot "$f"
    count=$(etcdctl get "" --prefix --count-only --rev="$rev" -w fields 2>/dev/null | field Count || true)
    ver=$(etcdctl endpoint status -w fields 2>/dev/null | field Version || true)
    # SFTP runs as the login user; under sudo, let that user read the file
    if [ -n "${SUDO_USER:-}" ]; then chown "$SUDO_USER" "$d" "$f"; fi
    printf 'file=%s\nstatus=%s\nkeys=%s\nsha256=%s\nsize=%s\nversion=%s\n' \
        "$f" "$st" "$count" "$(sha256sum "$f" | cut -d' ' -f1)" "$(size_of "$f")" "$ver"
    exit 0
fi

dir=${HOMEKUBE_BACKUP_DIR:?HOMEKUBE_BACKUP_DIR is not set}
keep=${HOMEKUBE_BACKUP_KEEP:-7}
max_bytes=${HOMEKUBE_BACKUP_MAX_BYTES:-2147483648}
prefix=${HOMEKUBE_BACKUP_PREFIX:-etcd}
# snapshot names, oldest first (the UTC timestamp in the name sorts)
snapshots() {
    find "$dir" -maxdepth 1 -type f -name "${prefix}-*.db" -printf '%f\n' \
        | grep -E "^${prefix}-[0-9]{8}T[0-9]{6}Z\.db$" | sort || true
}

install -d -m 0700 "$dir"
exec 9>"$dir/.lock"
flock -n 9 || { log "another backup run holds $dir/.lock; skipped"; exit 0; }
load_env

last=$(snapshots | tail -n 1)
if [ -n "$last" ]; then
    need=$(( 2 * $(size_of "$dir/$last") )); basis="the last snapshot, $last"
else
    db=$(etcdctl endpoint status -w fields | field DBSize)
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
snapshot "$part"
size=$(size_of "$part")
if [ "$size" -gt "$max_bytes" ]; then
    fail 1 "snapshot is $size bytes, above maxBytes ($max_bytes): not kept (etcd.backup.maxBytes)"
fi
mv -f "$part" "$dir/$prefix-$ts.db"
log "saved $dir/$prefix-$ts.db ($size bytes, revision $rev, $keys keys)"
# what `homekube status` shows of the last run (the snapshot's own header is not read back)
printf 'file=%s\nsize=%s\nrevision=%s\nkeys=%s\n' "$prefix-$ts.db" "$size" "$rev" "$keys" \
    > "$dir/.last.part" && mv -f "$dir/.last.part" "$dir/.last"

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
