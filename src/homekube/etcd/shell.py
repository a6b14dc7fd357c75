"""The host-side shell form of etcd's requests: etcdctl commands, the host fact, step scripts.

One way to call etcdctl in a command line: :data:`ETCDCTL`, every connection setting as a
flag (etcdctl refuses a flag that shadows an ETCDCTL_* variable, and `move-leader` sets its
connection flags itself, so the environment file is only for scripts and people). Scripts
that source :data:`~homekube.etcd.layout.ENV_FILE` (the snapshot script, restore's checks)
call plain `etcdctl`.

Everything here builds strings; the planners wrap them in actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homekube.etcd import api
from homekube.etcd.layout import (
    BINARIES,
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    ENV_FILE,
    LOCAL_ENDPOINT,
    LOCAL_GATEWAY,
    PACKAGE_BIN,
    TARBALL_BIN,
    USER_HOME,
    member_dir,
)
from homekube.facts.base import Fact, shell_quote
from homekube.facts.host import HostFacts
from homekube.shell import Cmd, poll_until
from homekube.shell import sh as hk_sh

ETCDCTL_ENV = (
    "ETCDCTL_API=3\n"
    f"ETCDCTL_ENDPOINTS={LOCAL_ENDPOINT}\n"
    f"ETCDCTL_CACERT={CA_CERT}\n"
    f"ETCDCTL_CERT={CLIENT_CERT}\n"
    f"ETCDCTL_KEY={CLIENT_KEY}\n"
    "ETCDCTL_DIAL_TIMEOUT=3s\n"
)


def etcdctl(endpoints: str = LOCAL_ENDPOINT) -> str:
    """One simple command (composes with ||, && and pipes): etcdctl pointed at `endpoints`."""
    return (f"etcdctl --endpoints={endpoints} --cacert={CA_CERT} --cert={CLIENT_CERT} "
            f"--key={CLIENT_KEY} --dial-timeout=3s --command-timeout=3s")


#: etcdctl pointed at the local member
ETCDCTL = etcdctl()
#: the member answers a linearizable read (its answer printed)
HEALTH_CHECK = f"{ETCDCTL} endpoint health"
HEALTHY = f"{HEALTH_CHECK} >/dev/null 2>&1"
#: a learner refuses the linearizable read behind `endpoint health`; `endpoint status` is
#: answered by any member that serves
SERVE_CHECK = f"{ETCDCTL} endpoint status"

USERADD = (
    f"getent passwd etcd >/dev/null || {{ useradd --system --user-group --home-dir {USER_HOME} "
    "--no-create-home --shell /usr/sbin/nologin etcd && install -d -m 0755 /var/lib/homekube && "
    "touch /var/lib/homekube/etcd-user; }"
)

# `etcdctl member list` prints "id, started, name, peer URLs, client URLs, is learner": these
# awk programs are the one place that reads that table
_ID_OF = "awk -F', ' '$3==\"{name}\"{{print $1}}'"
_ID_AND_LEARNER_OF = "awk -F', ' '$3==\"{name}\"{{print $1\" \"$NF}}'"


# ---------------------------------------------------------------------------------- the fact


@dataclass(frozen=True)
class EtcdHostFacts:
    user: bool
    versions: dict[str, str]  # binary dir -> version
    initialized: bool
    members: list[api.EtcdMember] | None  # None: could not ask (etcd not running here)
    status: api.EtcdStatus | None


NO_ETCD = EtcdHostFacts(False, {}, False, None, None)


def parse_etcd_fact(text: str) -> EtcdHostFacts:
    kv: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            kv[k.strip()] = v
    versions = {}
    for d in (TARBALL_BIN, PACKAGE_BIN):
        v = api.parse_version(kv.get(f"version{d}", "").replace("\\n", "\n"))
        if v:
            versions[d] = v
    return EtcdHostFacts(
        user=bool(kv.get("user")), versions=versions,
        initialized=kv.get("initialized") == "yes",
        members=api.MEMBER_LIST.parse(api.parse_json(kv.get("members", ""))),
        status=api.STATUS.parse(api.parse_json(kv.get("status", ""))),
    )


def _curl(req: api.Request[Any]) -> str:
    tls = f"--cacert {CA_CERT} --cert {CLIENT_CERT} --key {CLIENT_KEY}"
    return (f"-sS --connect-timeout 3 -m 5 {tls} -X POST -d '{{}}' -w '\\n' "
            f"{LOCAL_GATEWAY}{req.path.removeprefix('/v3')}")


_all_executable = " && ".join(f'[ -x "$d/{b}" ]' for b in BINARIES)


def etcd_fact(data_dir: str, version_stamp: str) -> Fact[EtcdHostFacts]:
    """Who etcd runs as, the installed binaries' versions, and what the local member says.

    The member list and status come from etcd's JSON gateway with one `curl` (two requests,
    one TLS connection) when curl is there: two `etcdctl` runs cost ~55 ms of CPU per host.
    A stopped member refuses the connection at once, so no `systemctl is-active` is needed.
    `version_stamp` holds "inode size mtime version" of the tarball's binary: while the binary
    is that same file, its version is read from there instead of starting it (~17 ms of CPU).
    The tarball's version counts only while all of its binaries are there.
    """
    cmd = (
        "getent passwd etcd >/dev/null && echo user=etcd\n"
        f"for d in {TARBALL_BIN} {PACKAGE_BIN}; do [ -x \"$d/etcd\" ] || continue; v=\n"
        # an install cut short (a host powered off between two binaries) leaves etcd without
        # etcdctl: no version then, so the next apply installs the tarball again
        f'if [ "$d" = {TARBALL_BIN} ] && ! {{ {_all_executable}; }}; then continue; fi\n'
        f'if [ "$d" = {TARBALL_BIN} ] && [ -r {version_stamp} ]; then '
        f'read -r i s m v < {version_stamp}; [ "$i $s $m" = "$(stat -c \'%i %s %Y\' "$d/etcd")" ] || v=; fi\n'
        'if [ -n "$v" ]; then printf "version%s=etcd Version: %s\\n" "$d" "$v"; else '
        'printf "version%s=%s\\n" "$d" '
        '"$("$d/etcd" --version 2>/dev/null | tr "\\n" "|" | sed "s/|/\\\\\\\\n/g")"; fi; done\n'
        f'[ -d {shell_quote(member_dir(data_dir))} ] && echo initialized=yes\n'
        f"[ -r {ENV_FILE} ] || exit 0\n"
        "if command -v curl >/dev/null; then "
        f"curl {_curl(api.MEMBER_LIST)} --next {_curl(api.STATUS)} "
        "2>/dev/null | { IFS= read -r m; IFS= read -r s; printf 'members=%s\\nstatus=%s\\n' \"$m\" \"$s\"; }\n"
        "elif systemctl is-active -q etcd && command -v etcdctl >/dev/null; then "
        f'printf "members=%s\\n" "$({ETCDCTL} {api.MEMBER_LIST.etcdctl} 2>/dev/null | tr -d "\\n")"; '
        f'printf "status=%s\\n" "$({ETCDCTL} {api.STATUS.etcdctl} 2>/dev/null | tr -d "\\n")"; fi'
    )
    return Fact("etcd", cmd, parse_etcd_fact)


def etcd_facts(f: HostFacts) -> EtcdHostFacts:
    v = f.extra.get("etcd")
    return v if isinstance(v, EtcdHostFacts) else NO_ETCD


# ---------------------------------------------------------------------------------- step scripts


def wait_healthy(unit: str, check: str = HEALTH_CHECK, seconds: int = 120) -> str:
    """Poll `check` (quietly) until it succeeds; give up early when the unit failed, saying why.

    The failure shows the check's own last answer (an etcdctl error, or that etcdctl is
    missing), then the unit's status and journal.
    """
    return poll_until(
        hk_sh(f"{check} >/dev/null 2>&1"), seconds=seconds, every=0.2,
        failure=f"{unit} did not become healthy",
        give_up_if=Cmd("systemctl", "-q", "is-failed", unit),
        diagnose=[hk_sh(f"{check} 2>&1 | tail -n 5 >&2", compound=True),
                  Cmd("systemctl", "status", "--no-pager", unit).to_stderr(),
                  Cmd("journalctl", "-u", unit, "-n", "25", "--no-pager").to_stderr()],
    ).text


def member_add(name: str, peer: str) -> str:
    """Add `name` as a learner, retrying while etcd refuses reconfiguration.

    etcd refuses reconfiguration ("unhealthy cluster") until every voter has been connected
    for a few seconds, e.g. right after the previous promote. A retry after an attempt that
    timed out on the client but was applied by etcd finds our own peer URL taken ("Peer URLs
    already exists", seen under load): that is done.
    """
    return (
        f"{ETCDCTL} member list | grep -qF -e ', {name}, ' -e ', {peer}, ' && exit 0; "
        "end=$((SECONDS + 90)); while :; do "
        f"out=$({ETCDCTL} member add {name} --peer-urls={peer} --learner 2>&1) && exit 0; "
        "case $out in *'Peer URLs already exists'*) exit 0;; "
        f"*'unhealthy cluster'*|*'too many learner'*) ;; *) echo \"$out\" >&2; exit 1;; esac; "
        '[ $SECONDS -lt $end ] || { echo "$out" >&2; exit 1; }; sleep 0.5; done'
    )


def member_remove(name: str) -> str:
    """Remove member `name` (gone already: done); retried like `member add`."""
    return (
        f"id=$({ETCDCTL} member list | {_ID_OF.format(name=name)}); "
        '[ -z "$id" ] && exit 0; end=$((SECONDS + 90)); while :; do '
        f'out=$({ETCDCTL} member remove "$id" 2>&1) && exit 0; '
        "case $out in *'unhealthy cluster'*) ;; *) echo \"$out\" >&2; exit 1;; esac; "
        '[ $SECONDS -lt $end ] || { echo "$out" >&2; exit 1; }; sleep 0.5; done'
    )


def member_promote(name: str, seconds: int = 120) -> str:
    """Promote learner `name` once it has caught up (a voter already: done)."""
    return (
        f"end=$((SECONDS + {seconds})); while [ $SECONDS -lt $end ]; do "
        f"id=$({ETCDCTL} member list | {_ID_AND_LEARNER_OF.format(name=name)}); "
        f'set -- $id; [ -n "${{1:-}}" ] || {{ echo "{name} is not a member" >&2; exit 1; }}; '
        f'[ "${{2:-}}" = true ] || exit 0; '
        f'{ETCDCTL} member promote "$1" >/dev/null 2>&1 && exit 0; sleep 0.2; done; '
        f'echo "{name} did not catch up within {seconds}s" >&2; exit 1'
    )


#: a leader hands leadership to another started voter before it restarts (no election)
MOVE_LEADER = (
    f"set -- $({ETCDCTL} endpoint status 2>/dev/null | awk -F', ' '{{print $2, $5}}'); "
    '[ "${2:-}" = true ] || exit 0; '
    f"to=$({ETCDCTL} member list | awk -F', ' -v me=\"$1\" "
    "'$1 != me && $2 == \"started\" && $NF == \"false\" {print $1; exit}'); "
    f'[ -z "$to" ] || {ETCDCTL} move-leader "$to" >/dev/null'
)


def set_data_aside(data_dir: str) -> str:
    """Stop a removed member and keep its data under a dated name (never delete it)."""
    data = shell_quote(data_dir)
    return (f"systemctl disable --now etcd >/dev/null 2>&1 || true; "
            f"[ -d {data}/member ] && mv {data} {data}.removed-$(date +%Y%m%d%H%M%S) || true; "
            f"install -d -m 0700 -o etcd -g etcd {data}")


def make_data_dir(data_dir: str) -> str:
    return f"install -d -m 0700 -o etcd -g etcd {shell_quote(data_dir)}"


def live_counts_command() -> str:
    """Live keys and the revision, as `-w fields`; read with :func:`parse_live_counts`."""
    return f"{ETCDCTL} get '' --prefix --count-only -w fields; {ETCDCTL} endpoint status -w fields"


def parse_live_counts(text: str) -> dict[str, int]:
    """{"count": live keys, "revision": ...} from :func:`live_counts_command`'s output."""
    fields = api.parse_fields(text)
    return {k.lower(): int(fields[k]) for k in ("Count", "Revision") if fields.get(k, "").isdigit()}


# ---------------------------------------------------------------------------------- restore

#: a shell function: `total_keys FILE` prints a snapshot's totalKey (every stored revision)
TOTAL_KEYS_FN = (
    'total_keys() { etcdutl snapshot status "$1" -w json \\\n'
    "  | sed -n 's/.*\"totalKey\":\\([0-9]*\\).*/\\1/p'; }"
)


def field(name: str) -> str:
    """An awk filter printing the value of `name` from `etcdctl -w fields` output."""
    return f"awk -F' : ' '$1 == \"\\\"{name}\\\"\" {{gsub(/\"/, \"\", $2); print $2}}'"


def restore_checks(members: int, endpoints: list[str], keys: int | None, revision: int | None) -> str:
    """After a restore: `members` listed, every endpoint healthy, at least `keys` live keys
    and the snapshot's `revision` (None: not checked)."""
    checks = [
        f'members=$({ETCDCTL} member list | wc -l); [ "$members" -eq {members} ] || '
        f'{{ echo "$members members listed, want {members}" >&2; exit 1; }}',
        f"{etcdctl(','.join(endpoints))} endpoint health >/dev/null",
        f"count=$({ETCDCTL} get '' --prefix --count-only -w fields | {field('Count')})",
        f"rev=$({ETCDCTL} endpoint status -w fields | {field('Revision')})",
        'echo "live keys: $count, revision: $rev"',
    ]
    if keys is not None:
        checks.append(f'[ "$count" -ge {keys} ] || {{ echo "only $count live keys after '
                      f'restore; the snapshot had {keys}" >&2; exit 1; }}')
    if revision is not None:
        checks.append(f'[ "$rev" -ge {revision} ] || '
                      f'{{ echo "revision $rev is below the snapshot\'s {revision}" >&2; '
                      "exit 1; }")
    return "\n".join(checks)


def snapshot_restore(upload: str, sha256: str, *, name: str, initial_cluster: str, peer_url: str,
                     token: str, data_dir: str, bump: int, require_bump: bool) -> str:
    """Restore the uploaded snapshot into `data_dir`.restore as member `name`, checked.

    The upload's SHA-256 is checked first and the restored database must hold at least the
    snapshot's totalKey. `--bump-revision` (etcdutl ≥ 3.5.10) keeps revisions moving forward
    for Kubernetes' watch caches; without it the restore is refused when `require_bump`.
    """
    rd = shell_quote(data_dir + ".restore")
    no_bump = (
        'echo "etcdutl $(etcdutl version | head -1) has no --bump-revision: Kubernetes watch '
        'caches would see revisions go backwards; upgrade etcd (>= 3.5.10) first" >&2; exit 1'
        if require_bump else
        'echo "note: etcdutl has no --bump-revision; restoring without it (no Kubernetes layer)"'
    )
    return f"""f={shell_quote(upload)}
[ "$(sha256sum < "$f" | cut -d' ' -f1)" = {sha256} ] \
  || {{ echo "the uploaded snapshot is corrupt" >&2; exit 1; }}
command -v etcdutl >/dev/null || {{ echo "etcdutl is not installed on this host" >&2; exit 1; }}
bump=()
if etcdutl snapshot restore --help 2>&1 | grep -q -- --bump-revision; then
  bump=(--bump-revision {bump} --mark-compacted)
else
  {no_bump}
fi
rm -rf {rd}
log=$(mktemp)
etcdutl snapshot restore "$f" --name {shell_quote(name)} \\
  --initial-cluster {shell_quote(initial_cluster)} \\
  --initial-advertise-peer-urls {shell_quote(peer_url)} \\
  --initial-cluster-token {shell_quote(token)} \\
  --data-dir {rd} "${{bump[@]}}" 2>"$log" || {{ tail -n 20 "$log" >&2; rm -f "$log"; exit 1; }}
rm -f "$log"
{TOTAL_KEYS_FN}
want=$(total_keys "$f")
got=$(total_keys {rd}/member/snap/db)
[ -n "$got" ] && [ "$got" -ge "$want" ] \
  || {{ echo "restored database holds $got keys, the snapshot $want" >&2; exit 1; }}"""
