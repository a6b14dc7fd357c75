"""`homekube backup`: one etcd snapshot from a healthy member, verified, kept on this machine.

Steps: ask every etcd member whether it is healthy (one exec each, in parallel) and pick the
first healthy one in cluster.yaml order; on it, in one exec, `etcdctl snapshot save` into a
fresh temp directory, `etcdutl snapshot status` (hash, revision, totalKey), count the live
keys at the snapshot's revision and hash the file; copy it here over SFTP (base64 over the
exec channel when the host has no SFTP), check the SHA-256 again, and land it atomically
(0600, temp file + rename) as `<state dir>/backups/<cluster>-<UTC timestamp>.db` with a JSON
sidecar `<same name>.json`. The temp directory on the host is removed whatever happens.

Two key counts are recorded because they mean different things: `totalKey` is what etcdutl
reports (every stored revision of every key, before compaction), `keys` is the number of
live keys at the snapshot's revision (what `etcdctl get --prefix ""` returns). Restore checks
both.

No host lock is taken: a snapshot changes nothing, and a backup must work while an apply runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from homekube.config.model import ClusterConfig
from homekube.errors import ConnectError, HostError, RefusedError
from homekube.etcd.shell import HEALTHY
from homekube.etcd.snapshot import (
    ONCE_DIR_PREFIX,
    VERIFY_DIR_PREFIX,
    once_script,
    parse_kv,
    parse_report,
    parse_verify,
    verify_problems,
    verify_script,
)
from homekube.executor import Event, EventKind, Progress
from homekube.facts.base import shell_quote
from homekube.ops.session import close_all, connect_some, state_path
from homekube.transport.base import Transport

#: etcd appends the SHA-256 of the database to a snapshot taken with `snapshot save`
TRAILER = 32
_STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class BackupResult:
    path: Path
    sidecar: Path
    cluster: str
    member: str
    revision: int
    total_keys: int
    keys: int | None
    hash: int
    sha256: str
    size: int
    etcd_version: str
    created: str
    seconds: float

    def sidecar_json(self) -> dict[str, Any]:
        return {
            "file": self.path.name, "cluster": self.cluster, "member": self.member,
            "revision": self.revision, "totalKey": self.total_keys, "keys": self.keys,
            "hash": self.hash, "sha256": self.sha256, "size": self.size,
            "etcdVersion": self.etcd_version, "createdAt": self.created,
            "seconds": round(self.seconds, 3),
        }


def backups_dir(cfg: ClusterConfig) -> Path:
    return state_path(cfg) / "backups"


def verify_trailer(path: Path) -> tuple[bool, str]:
    """Check the SHA-256 etcd appends to a saved snapshot; (ok, sha256 of the whole file)."""
    whole = hashlib.sha256()
    body = hashlib.sha256()
    size = path.stat().st_size
    if size <= TRAILER:
        return False, ""
    left = size - TRAILER
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            whole.update(chunk)
            if left > 0:
                body.update(chunk[:left])
                tail += chunk[left:]
                left -= min(left, len(chunk))
            else:
                tail += chunk
    return body.digest() == tail[-TRAILER:], whole.hexdigest()


async def pick_member(cfg: ClusterConfig, ts: dict[str, Transport]) -> str:
    """The first etcd host (cluster.yaml order) whose member answers a health check."""
    names = [h.name for h in cfg.etcd_hosts if h.name in ts]
    results = await asyncio.gather(*(ts[n].run(HEALTHY, timeout=30) for n in names))
    for n, res in zip(names, results, strict=True):
        if res.ok:
            return n
    raise RefusedError("no healthy etcd member to take a snapshot from",
                       hint="`homekube status` shows which members are down")


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _claim_name(out: Path, cluster: str, now: datetime) -> Path:
    """`<cluster>-<stamp>.db`, one second later when that name is taken (never overwrite)."""
    t = now
    while True:
        p = out / f"{cluster}-{t.strftime(_STAMP)}.db"
        if not p.exists():
            return p
        t = datetime.fromtimestamp(t.timestamp() + 1, UTC)


def _part_file(out: Path, cluster: str) -> Path:
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    return out / f".{cluster}.{secrets.token_hex(6)}.part"



def _land(part: Path, out: Path, cluster: str, now: datetime, sha: str, size: int,
          member: str) -> Path:
    """Check the copied file (size, SHA-256, etcd's trailer), fsync it and rename it in."""
    ok, local_sha = verify_trailer(part)
    if local_sha != sha or part.stat().st_size != size:
        raise HostError(f"the copy differs from the snapshot on the host (sha256 "
                        f"{local_sha} ≠ {sha})", host=member, phase="backup")
    if not ok:
        raise HostError("the snapshot's own integrity hash does not match", host=member,
                        phase="backup")
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    final = _claim_name(out, cluster, now)
    part.replace(final)
    _fsync_dir(out)
    return final


async def take_backup(cfg: ClusterConfig, ts: dict[str, Transport], out: Path,
                      member: str | None = None, progress: Progress | None = None) -> BackupResult:
    t0 = time.monotonic()

    def say(kind: EventKind, host: str, step: str, seconds: float = 0.0) -> None:
        if progress is not None:
            progress(Event(kind, host, "backup", step, seconds=seconds))

    if progress is not None:
        progress(Event("phase", phase="backup", text="etcd backup"))
    member = member or await pick_member(cfg, ts)
    t = ts[member]
    say("start", member, "etcdctl snapshot save, verify")
    res = await t.run(once_script(), timeout=3600)
    remote_dir = parse_kv(res.stdout).get("dir")
    try:
        if not res.ok:
            raise HostError(f"snapshot failed (exit {res.exit_status})", host=member,
                            phase="backup", output=res.stderr)
        try:
            rep = parse_report(res.stdout)
        except ValueError as e:
            raise HostError(f"cannot read the snapshot's status ({e})", host=member,
                            phase="backup", output=res.stdout + res.stderr) from None
        size, sha = rep.size, rep.sha256
        now = datetime.now(UTC)
        out = await asyncio.to_thread(out.expanduser)
        part = await asyncio.to_thread(_part_file, out, cfg.name)
        say("done", member, "etcdctl snapshot save, verify", time.monotonic() - t0)
        say("start", member, f"copy {size} bytes here")
        try:
            await t.get_file(rep.file, part)
            final = await asyncio.to_thread(_land, part, out, cfg.name, now, sha, size, member)
        except OSError as e:
            raise ConnectError(f"copying the snapshot failed: {e}", host=member) from None
        finally:
            await asyncio.to_thread(part.unlink, missing_ok=True)
        result = BackupResult(
            path=final, sidecar=final.with_suffix(".json"), cluster=cfg.name, member=member,
            revision=rep.status.revision, total_keys=rep.status.total_keys, keys=rep.keys,
            hash=rep.status.hash, sha256=sha, size=size, etcd_version=rep.version,
            created=now.isoformat(timespec="seconds"),
            seconds=time.monotonic() - t0,
        )
        await asyncio.to_thread(_write_json, result.sidecar, result.sidecar_json())
        say("done", member, f"copy {size} bytes here", time.monotonic() - t0)
        return result
    finally:
        if remote_dir and remote_dir.startswith(ONCE_DIR_PREFIX):
            await t.run(f"rm -rf {shell_quote(remote_dir)}", timeout=60)


async def run_backup(cfg: ClusterConfig, console: Console, *, out: Path | None = None,
                     progress: Progress | None = None) -> int:
    hosts = list(cfg.etcd_hosts)
    if not hosts:
        raise RefusedError("no host has the etcd role", hint="give a host the etcd role first")
    ts, bad = await connect_some(cfg, hosts)
    try:
        if not ts:
            raise ConnectError("no etcd host can be reached:\n" +
                               "\n".join(f"{h}: {why}" for h, why in bad.items()))
        r = await take_backup(cfg, ts, out or backups_dir(cfg), progress=progress)
    finally:
        await close_all(ts)
    keys = f"{r.keys} keys" if r.keys is not None else "key count unknown"
    console.print(f"snapshot from {r.member}: revision {r.revision}, {keys} "
                  f"({r.total_keys} stored revisions), {r.size} bytes, hash {r.hash}, "
                  f"{r.seconds:.2f}s", markup=False)
    console.print(f"sidecar: {r.sidecar}", markup=False)
    console.print(str(r.path), markup=False)
    return 0


async def run_verify(cfg: ClusterConfig, console: Console, snapshot: Path, *,
                     host: str | None = None) -> int:
    """`homekube backup --verify FILE`: prove a snapshot restores, without touching the cluster.

    The file is checked here (etcd's SHA-256 trailer, the sidecar's SHA-256), uploaded to one
    etcd host (the first reachable, or `host`), restored there with `etcdutl snapshot restore`
    into a scratch directory, served by a throwaway etcd on loopback ports, and its live keys
    and revision are counted and compared with the sidecar. The scratch copy is removed.
    """
    from homekube.ops.restore import inspect, upload

    snap = await asyncio.to_thread(inspect, snapshot)
    hosts = [h for h in cfg.etcd_hosts if host is None or h.name == host]
    if not hosts:
        raise RefusedError(f"no etcd host {host!r} in cluster.yaml" if host else
                           "no host has the etcd role", hint="verify needs etcdutl and etcd on a host")
    ts, bad = await connect_some(cfg, hosts)
    try:
        if not ts:
            raise ConnectError("no etcd host can be reached:\n" +
                               "\n".join(f"{h}: {why}" for h, why in bad.items()))
        name = next(h.name for h in hosts if h.name in ts)
        t = ts[name]
        remote = f"{VERIFY_DIR_PREFIX}{secrets.token_hex(6)}.db"
        t0 = time.monotonic()
        try:
            await upload(t, snap.path, remote, snap.sha256)
            res = await t.run(verify_script(shell_quote(remote), snap.sha256), timeout=900)
        finally:
            await t.run(f"rm -f {shell_quote(remote)} {shell_quote(remote + '.part')}", timeout=60)
        seconds = time.monotonic() - t0
    finally:
        await close_all(ts)
    if not res.ok:
        raise HostError(f"the snapshot did not restore (exit {res.exit_status})", host=name,
                        phase="backup --verify", output=res.stderr)
    try:
        got = parse_verify(res.stdout)
    except ValueError as e:
        raise HostError(str(e), host=name, phase="backup --verify",
                        output=res.stderr) from None
    problems = verify_problems(got, snap.keys, snap.revision)
    recorded = ("matches its sidecar" if snap.keys is not None else
                "no sidecar to compare with")
    console.print(f"{snap.path.name}: restored on {name} into a scratch directory: {got.keys} live "
                  f"keys at revision {got.revision} ({recorded}); {seconds:.1f}s; the cluster "
                  "was not touched", markup=False)
    for p in problems:
        console.print(f"problem: {p}", markup=False)
    return 1 if problems else 0
