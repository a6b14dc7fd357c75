"""`homekube restore SNAPSHOT --yes`: rebuild every etcd member from one snapshot (facts.md §5).

Without `--yes` it prints the plan below and touches nothing (it does not even connect).

The snapshot is checked here first (etcd's own SHA-256 trailer, and the sidecar's SHA-256
when `<name>.json` sits beside it), then uploaded to every member while etcd still runs, so a
bad file or a full disk stops the restore before anything was stopped. Then, as one plan run
by the executor (its stages in order, hosts in parallel within a stage, stop at the first
failure):

    restore data       every member: check the upload's SHA-256; `etcdutl snapshot restore`
                       into `<data-dir>.restore` (`--name`, `--initial-cluster` of all etcd
                       hosts, `--initial-advertise-peer-urls`, `--initial-cluster-token`, and
                       `--bump-revision 1000000000 --mark-compacted` when etcdutl has them);
                       check the restored database holds at least the snapshot's totalKey.
                       etcd still serves meanwhile.
    stop control plane control planes: move the kube-apiserver, kube-controller-manager and
                       kube-scheduler manifests out of /etc/kubernetes/manifests (kubelet then
                       stops the static pods) and wait until none of them runs: nothing writes
                       to etcd, and no controller acts on the pre-restore state meanwhile
    stop etcd          every member: stop etcd
    swap data          every member: keep the old data dir as
                       `<data-dir>.before-restore-<stamp>`, move the restored one in, chown
                       etcd, 0700; write etcd.conf.yml with the initial-cluster and token the
                       data was restored with (so `homekube plan` afterwards has nothing to
                       change: the etcd planner keeps those bootstrap-only keys once a member
                       has data)
    start etcd         every member at once: start etcd, wait until healthy (they need each
                       other for quorum)
    verify             one member: all members listed and healthy, revision ≥ the snapshot's,
                       live key count ≥ the snapshot's (bump-revision adds a revision, not a key)
    start control plane control planes: put the manifests back (kubelet starts the pods)

With the Kubernetes layer on, `restore` then waits (up to `timeouts.wait`) until the cluster is
back, and says what it waited for: the API's /readyz, kube-controller-manager's and
kube-scheduler's /healthz on every control plane, every node Ready with its kubelet's Lease
renewed after the restore, and every Deployment and DaemonSet in the system namespaces
(CoreDNS, kube-proxy, the CNI) rolled out (see homekube.facts.kube_health). Kubelets and
controllers need no restart: `--bump-revision` + `--mark-compacted` make every watch fail as
compacted, so clients list again instead of waiting for revisions they already saw.

`--bump-revision` exists in etcdutl since 3.5.10-ish/3.6 (etcd-io/etcd#16029, #16165); an
older etcdutl (the lab's 3.5.1) restores without it when the Kubernetes layer is off, and is
refused when it is on (watch caches would see revisions go backwards).

The whole sequence runs on a real kubeadm cluster in tests/rig/test_k8s_day2.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import ConnectError, HomekubeError, HostError, RefusedError, UsageError
from homekube.etcd.shell import (
    live_counts_command,
    parse_live_counts,
    restore_checks,
    snapshot_restore,
    wait_healthy,
)
from homekube.executor import Event, EventKind, Progress, execute
from homekube.facts.base import shell_quote
from homekube.facts.kube_health import Health, health_command, parse_health
from homekube.ops.backup import verify_trailer
from homekube.ops.session import close_all, connect_all, holder, timeouts_of
from homekube.plan.model import Act, Change, ChangeKey, PhasePlan, Plan, Run, WriteFile
from homekube.plan.order import Stage, declare, parallel
from homekube.render import etcd as r
from homekube.shell import poll_until, sh
from homekube.topology import Topology
from homekube.transport.base import Transport

BUMP = 1_000_000_000
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
#: their process names as pgrep sees them (the kernel keeps 15 characters)
CONTROL_PLANE_COMM = ("kube-apiserver", "kube-controller", "kube-scheduler")
CHUNK = 8 << 20  # bytes per upload exec (base64 makes it ~11 MiB of script)
PHASE = "restore"

#: identities of the restore plan's steps (what `describe` groups and picks by)
RESTORE_DATA = ChangeKey("etcd-data", "restore", Act.RESTORE)
STOP_CONTROL_PLANE = ChangeKey("static-pod", "control plane", Act.STOP)
STOP_ETCD = ChangeKey("unit", "etcd.service", Act.STOP)
SWAP_DATA = ChangeKey("etcd-data", "data dir", Act.REPLACE)
START_ETCD = ChangeKey("unit", "etcd.service", Act.START)
VERIFY = ChangeKey("etcd", "cluster", Act.VERIFY)
START_CONTROL_PLANE = ChangeKey("static-pod", "control plane", Act.START)

(RESTORE_STAGE, STOP_CP_STAGE, STOP_ETCD_STAGE, SWAP_STAGE, START_ETCD_STAGE, VERIFY_STAGE,
 START_CP_STAGE) = declare(
    PHASE, parallel("restore data"), parallel("stop control plane"), parallel("stop etcd"),
    parallel("swap data"), parallel("start etcd"), parallel("verify"), parallel("start control plane"))


@dataclass(frozen=True)
class Snapshot:
    """A local snapshot file, checked, with what its sidecar says (when there is one)."""

    path: Path
    size: int
    sha256: str
    revision: int | None = None
    total_keys: int | None = None
    keys: int | None = None
    member: str | None = None
    cluster: str | None = None


def inspect(path: Path) -> Snapshot:
    """Verify a snapshot file before anything else happens; raise UsageError when unusable."""
    path = path.expanduser()
    if not path.is_file():
        raise UsageError(f"{path}: no such snapshot file")
    ok, sha = verify_trailer(path)
    if not ok:
        raise UsageError(f"{path}: not an intact etcd snapshot (its SHA-256 trailer differs)",
                         hint="use a file written by `homekube backup` or `etcdctl snapshot save`")
    meta: dict[str, Any] = {}
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            meta = dict(json.loads(side.read_text()))
        except (ValueError, TypeError) as e:
            raise UsageError(f"{side}: unreadable sidecar ({e})") from None
        if meta.get("sha256") and meta["sha256"] != sha:
            raise UsageError(f"{path}: SHA-256 {sha} differs from its sidecar's {meta['sha256']}",
                             hint="the file was changed or truncated after the backup")

    def num(k: str) -> int | None:
        v = meta.get(k)
        return int(v) if isinstance(v, int) else None

    return Snapshot(path, path.stat().st_size, sha, num("revision"), num("totalKey"),
                    num("keys"), meta.get("member"), meta.get("cluster"))


# ---------------------------------------------------------------------------------- planning


def restore_members(cfg: ClusterConfig) -> list[tuple[str, str]]:
    return [(h.name, r.peer_url(h)) for h in cfg.etcd_hosts]


def _apiserver_hosts(cfg: ClusterConfig) -> list[HostSpec]:
    return list(cfg.control_planes)


def remote_path(stamp: str) -> str:
    return f"/var/tmp/homekube-restore-{stamp}.db"


def _restore_cmd(cfg: ClusterConfig, h: HostSpec, snap: Snapshot, upload: str) -> str:
    return snapshot_restore(upload, snap.sha256, name=h.name,
                            initial_cluster=r.initial_cluster(restore_members(cfg)),
                            peer_url=r.peer_url(h), token=r.cluster_token(cfg),
                            data_dir=cfg.etcd.data_dir, bump=BUMP, require_bump=cfg.kubernetes.enabled)


def _aside(component: str, stamp: str) -> str:
    return f"/etc/kubernetes/{component}.yaml.stopped-by-homekube-{stamp}"


def _stop_control_plane(stamp: str) -> str:
    moves = [f"if [ -f {shell_quote(f'/etc/kubernetes/manifests/{c}.yaml')} ]; then "
             f"mv {shell_quote(f'/etc/kubernetes/manifests/{c}.yaml')} {shell_quote(_aside(c, stamp))}; fi"
             for c in CONTROL_PLANE]
    running = "|".join(CONTROL_PLANE_COMM)
    # kubelet notices a missing manifest within its sync period (~20 s) and kills the pod
    wait = poll_until(sh(f"! pgrep -x {shell_quote(running)} >/dev/null"), seconds=120,
                      failure="the control plane still runs 120 s after its manifests were moved aside",
                      diagnose=[sh(f"pgrep -ax {shell_quote(running)} >&2")]).text
    return "\n".join([*moves, wait])


def _start_control_plane(stamp: str) -> str:
    return "\n".join(
        f"if [ -f {shell_quote(_aside(c, stamp))} ]; then "
        f"mv {shell_quote(_aside(c, stamp))} {shell_quote(f'/etc/kubernetes/manifests/{c}.yaml')}; fi"
        for c in CONTROL_PLANE)


def _swap(cfg: ClusterConfig, stamp: str, upload: str) -> str:
    d = shell_quote(cfg.etcd.data_dir)
    rd = shell_quote(cfg.etcd.data_dir + ".restore")
    old = shell_quote(f"{cfg.etcd.data_dir}.before-restore-{stamp}")
    return (
        f"[ -d {rd}/member ] || "
        f"{{ echo \"{cfg.etcd.data_dir}.restore is missing\" >&2; exit 1; }}\n"
        f"if [ -e {d} ]; then mv {d} {old}; fi\n"
        f"mv {rd} {d}\n"
        f"chown -R etcd:etcd {d} && chmod 0700 {d}\n"
        f"rm -f {shell_quote(upload)}"
    )


def _verify(cfg: ClusterConfig, snap: Snapshot) -> str:
    return restore_checks(len(cfg.etcd_hosts), Topology(cfg).etcd_client_urls, snap.keys, snap.revision)


def restore_plan(cfg: ClusterConfig, snap: Snapshot, stamp: str) -> Plan:
    """Every step of a restore as one Plan of stages (pure: no host is asked anything)."""
    etcd_hosts = list(cfg.etcd_hosts)
    if not etcd_hosts:
        raise RefusedError("no host has the etcd role; there is nothing to restore into")
    up = remote_path(stamp)
    steps: list[Change] = []

    def add(h: str, key: ChangeKey, resource: str, summary: str, why: str, stage: Stage,
            *actions: Run | WriteFile) -> None:
        steps.append(Change(h, PHASE, resource, summary, why, tuple(actions), order=stage, key=key))

    data = cfg.etcd.data_dir
    for h in etcd_hosts:
        add(h.name, RESTORE_DATA, "restore data", f"restore the snapshot into {data}.restore",
            f"--name <member>, --initial-cluster of {len(etcd_hosts)} members, token "
            f"{r.cluster_token(cfg)}, --bump-revision {BUMP} --mark-compacted when etcdutl has "
            "them; etcd keeps serving meanwhile",
            RESTORE_STAGE, Run(_restore_cmd(cfg, h, snap, up), f"etcdutl snapshot restore into {data}.restore"))
    for h in _apiserver_hosts(cfg):
        add(h.name, STOP_CONTROL_PLANE, "control plane",
            "stop kube-apiserver, kube-controller-manager and kube-scheduler if present",
            "nothing writes to etcd during the swap, no controller acts on the old state",
            STOP_CP_STAGE,
            Run(_stop_control_plane(stamp), "move the static pods' manifests aside, wait until they exit"))
    for h in etcd_hosts:
        add(h.name, STOP_ETCD, "unit etcd.service", "stop etcd",
            "every member stops before any data is swapped", STOP_ETCD_STAGE,
            Run("systemctl stop etcd"))
    for h in etcd_hosts:
        conf = r.member_config(cfg, h, members=restore_members(cfg), state="new")
        add(h.name, SWAP_DATA, "data dir",
            f"swap in the restored data; keep the old as {data}.before-restore-{stamp}",
            "the old data stays on disk until you delete it", SWAP_STAGE,
            Run(_swap(cfg, stamp, up), f"move {data} aside, move {data}.restore in, chown etcd"),
            WriteFile(r.CONFIG_PATH, r.config_file(conf), 0o644, "root", "etcd"))
    for h in etcd_hosts:
        add(h.name, START_ETCD, "unit etcd.service", "start etcd",
            "all members start together and elect a leader", START_ETCD_STAGE,
            Run("systemctl start --no-block etcd"), Run(wait_healthy("etcd"), "wait until healthy"))
    keys = f"≥ {snap.keys} live keys" if snap.keys is not None else "live keys counted"
    add(etcd_hosts[0].name, VERIFY, "verify", f"check {len(etcd_hosts)} healthy members, {keys}",
        "the restored cluster must hold at least what the snapshot held", VERIFY_STAGE,
        Run(_verify(cfg, snap), "check members, health, key count and revision"))
    for h in _apiserver_hosts(cfg):
        add(h.name, START_CONTROL_PLANE, "control plane",
            "start the control plane again (the manifests it stopped)",
            "kubelet starts the static pods once their manifests are back", START_CP_STAGE,
            Run(_start_control_plane(stamp), "move the static pods' manifests back"))
    hosts = [h.name for h in cfg.hosts if h.has("etcd") or h.has("control-plane")]
    phase = PhasePlan(PHASE, "etcd restore", tuple(steps))
    return Plan(cluster=cfg.name, hosts=hosts, phases=[phase])


def describe(plan: Plan, snap: Snapshot, cfg: ClusterConfig | None = None) -> str:
    """The plan as numbered steps (what `restore` prints without --yes)."""
    lines = [f"restore {snap.path} ({snap.size} bytes, sha256 {snap.sha256[:16]}…)"]
    if snap.revision is not None:
        keys = f", {snap.keys} live keys" if snap.keys is not None else ""
        lines[0] += f": revision {snap.revision}{keys}, taken from {snap.member or '?'}"
    members = [c.host for c in plan.changes if c.key == RESTORE_DATA]
    lines.append(f"upload it to {', '.join(members)}, then:")
    waves = [w for p in plan.phases for w in p.waves]
    for i, cs in enumerate(waves, start=1):
        by_key: dict[ChangeKey | None, list[Change]] = {}
        for c in cs:
            by_key.setdefault(c.key, []).append(c)
        for same in by_key.values():
            hosts = ", ".join(c.host for c in same)
            lines.append(f"  {i}. {hosts}: {same[0].summary} ({same[0].why})")
    if cfg is not None and cfg.kubernetes.enabled and cfg.control_planes:
        lines.append(f"then wait (up to {cfg.timeouts.wait} s) for the API, "
                     "kube-controller-manager, kube-scheduler, every node Ready with a renewed "
                     "lease, and the system Deployments and DaemonSets")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- effects


async def upload(t: Transport, local: Path, remote: str, sha256: str) -> None:
    """Send `local` to `remote` (0600) in base64 chunks over the exec channel, then verify."""
    q = shell_quote(remote)
    part = shell_quote(remote + ".part")
    res = await t.run(f"umask 077; : > {part}", timeout=60)
    if not res.ok:
        raise HostError(f"cannot create {remote}: {res.stderr.strip()}", host=t.host, phase=PHASE)
    with local.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            b64 = base64.encodebytes(chunk).decode()
            script = f"base64 -d >> {part} <<'HOMEKUBE_EOF'\n{b64}HOMEKUBE_EOF\n"
            res = await t.run(script, timeout=600)
            if not res.ok:
                raise HostError(f"upload failed: {res.stderr.strip()[-300:]}", host=t.host,
                                phase=PHASE)
    check = f'[ "$(sha256sum < {part} | cut -d" " -f1)" = {sha256} ] && mv -f {part} {q}'
    res = await t.run(check, timeout=600)
    if not res.ok:
        raise HostError("the uploaded snapshot does not match the local file", host=t.host,
                        phase=PHASE)


async def _cleanup(ts: dict[str, Transport], remote: str) -> None:
    q = shell_quote(remote)
    await asyncio.gather(*(t.run(f"rm -f {q} {q}.part", timeout=60) for t in ts.values()),
                         return_exceptions=True)


async def live_counts(t: Transport) -> dict[str, int]:
    res = await t.run(live_counts_command(), timeout=60)
    return parse_live_counts(res.stdout)


def kube_nodes(cfg: ClusterConfig) -> list[str]:
    """The hosts that are Kubernetes nodes (kubeadm init or join ran there)."""
    return [h.name for h in cfg.hosts if h.has("control-plane") or h.has("worker")]


async def wait_kubernetes(cfg: ClusterConfig, ts: dict[str, Transport], *, seconds: float,
                          progress: Progress | None = None, every: float = 2.0) -> tuple[Health, float]:
    """Poll until the control planes, nodes and system workloads are back; (health, seconds).

    Raise HostError naming what is still not back after `seconds`.
    """
    cps = [h.name for h in cfg.control_planes if h.name in ts]
    first, nodes = cps[0], kube_nodes(cfg)
    step = (f"wait for the API, kube-controller-manager, kube-scheduler, {len(nodes)} nodes Ready "
            "and system workloads (CoreDNS, kube-proxy, CNI)")

    def say(kind: EventKind, text: str = "", secs: float = 0.0) -> None:
        if progress is not None:
            progress(Event(kind, first, PHASE, step, text=text, seconds=secs))

    say("start")
    t0 = time.monotonic()
    since: float | None = None
    problems: list[str] = []
    while True:
        res = await ts[first].run(health_command(), timeout=120)
        health = parse_health(res.stdout)
        if since is None:
            # the API was down from the stop until now: a lease renewed from here on is news
            since = float(health.now) if health.now is not None else time.time()
        problems = health.problems(nodes, since)
        for other in cps[1:]:
            o = parse_health((await ts[other].run(health_command(api=False), timeout=60)).stdout)
            problems += [f"{other}: {p}" for p in o.problems(nodes, since, api=False)]
        dt = time.monotonic() - t0
        if not problems:
            say("done", secs=dt)
            return health, dt
        if dt > seconds:
            say("fail", "; ".join(problems[:5]))
            raise HostError(
                f"the cluster is not back {seconds:.0f} s after the restore: " + "; ".join(problems),
                host=first, phase=PHASE, step=step,
                hint="etcd holds the snapshot's data; look at `kubectl get pods -A` and the "
                     "kubelet's journal on the nodes named above (timeouts.wait sets this limit)")
        await asyncio.sleep(every)


async def run_restore(cfg: ClusterConfig, console: Console, snapshot: Path, *, yes: bool,
                      progress: Progress | None = None,
                      confirm: Callable[[str], bool] | None = None) -> int:
    """Without `yes` (or a yes from `confirm`, a person at a terminal) only show the plan."""
    snap = await asyncio.to_thread(inspect, snapshot)
    if snap.cluster is not None and snap.cluster != cfg.name:
        raise RefusedError(f"{snapshot} is a backup of cluster {snap.cluster!r}, not {cfg.name!r}",
                           hint="pick a snapshot of this cluster")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    plan = restore_plan(cfg, snap, stamp)
    if not yes:
        console.print(describe(plan, snap, cfg), markup=False)
        if confirm is None or not confirm("Stop etcd on every member and restore this snapshot?"):
            console.print("nothing was changed; run again with --yes to restore", markup=False)
            return 0
    t0 = time.monotonic()
    hosts = [h for h in cfg.hosts if h.name in plan.hosts]
    ts = await connect_all(cfg, hosts)
    up = remote_path(stamp)
    t_up = t0
    try:
        await asyncio.gather(*(t.lock(holder()) for t in ts.values()))
        etcd_ts = {h.name: ts[h.name] for h in cfg.etcd_hosts}
        await asyncio.gather(*(upload(t, snap.path, up, snap.sha256) for t in etcd_ts.values()))
        t_up = time.monotonic()
        result = await execute(plan, ts, progress=progress, timeouts=timeouts_of(cfg))
        if not result.ok:
            first = result.failed[0]
            for e in result.failed:
                console.print(f"✗ {e}", markup=False)
            raise HostError(
                f"restore stopped: {len(result.applied)} of {len(plan.changes)} steps done",
                host=first.host or "?", phase=PHASE, step=first.step,
                hint=(f"once the swap ran the old data is kept as {cfg.etcd.data_dir}"
                      f".before-restore-{stamp}; the stopped control plane's manifests wait in "
                      f"/etc/kubernetes/*.yaml.stopped-by-homekube-{stamp}; fix the cause and "
                      "run restore again"),
            )
        got = await live_counts(ts[cfg.etcd_hosts[0].name])
        t_etcd = time.monotonic()
        back: tuple[Health, float] | None = None
        if cfg.kubernetes.enabled and any(h.name in ts for h in cfg.control_planes):
            back = await wait_kubernetes(cfg, ts, seconds=float(timeouts_of(cfg)["wait"]),
                                         progress=progress)
    except HomekubeError:
        raise
    except OSError as e:
        raise ConnectError(f"restore failed: {e}") from None
    finally:
        await _cleanup({h.name: ts[h.name] for h in cfg.etcd_hosts if h.name in ts}, up)
        await close_all(ts)
    dt = time.monotonic() - t0
    want = f" (snapshot: {snap.keys})" if snap.keys is not None else ""
    console.print(f"restored {len(cfg.etcd_hosts)} members in {t_etcd - t0:.2f}s (upload "
                  f"{t_up - t0:.2f}s): {got.get('count', '?')} live keys{want}, revision "
                  f"{got.get('revision', '?')}", markup=False)
    if back is not None:
        health, waited = back
        console.print(f"Kubernetes is back after {waited:.2f}s more (total {dt:.2f}s): "
                      f"waited for {health.summary(kube_nodes(cfg))}", markup=False)
    console.print(f"old data kept as {cfg.etcd.data_dir}.before-restore-{stamp} on each member",
                  markup=False)
    return 0
