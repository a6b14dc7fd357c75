"""`homekube status`: hosts, etcd members and health, certificate lifetimes, scheduled backups.

Warnings (also under `warnings` in `--output json`): any certificate (etcd, kubeadm, kubelet,
handed-out kubeconfigs) expiring within `etcd.renewWithinDays`, and per etcd host: the newest
scheduled snapshot older than twice the schedule's period, the last run failed, or the timer
not running (:func:`homekube.components.backup.backup_status`). Warnings do not change the
exit code.

It works with hosts down (that is when you need it most): unreachable hosts are listed as
such, and etcd is asked over mTLS from this machine, falling back to `etcdctl` on a member
when etcd's client port is not reachable from here.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from homekube.components.backup import backup_status, fmt_age
from homekube.components.endpoint import endpoint_status
from homekube.components.registry import all_phases
from homekube.config.model import ClusterConfig
from homekube.etcd.api import EtcdMember, EtcdStatus
from homekube.etcd.client import EtcdHttp, operator_creds
from homekube.etcd.layout import UNIT, client_url
from homekube.etcd.shell import etcd_facts
from homekube.ops.certs import handed_out, host_expiries, window_days
from homekube.ops.kubernetes import kubernetes_status, print_kubernetes_status
from homekube.ops.session import close_all, connect_some, gather_facts, state_path
from homekube.pki.inventory import Expiry, handed_out_rows
from homekube.pki.inventory import warnings as cert_warnings
from homekube.pki.store import LocalCA


async def collect(cfg: ClusterConfig) -> dict[str, Any]:
    ts, unreachable = await connect_some(cfg, cfg.hosts)
    try:
        reachable = [h for h in cfg.hosts if h.name in ts]
        facts = await gather_facts(cfg, reachable, ts, all_phases())
    finally:
        await close_all(ts)
    now = datetime.now(UTC)
    data: dict[str, Any] = {"cluster": cfg.name, "time": now.isoformat(), "hosts": [], "etcd": {}}
    expiries: list[Expiry] = []
    backups: list[dict[str, Any]] = []
    for h in cfg.hosts:
        f = facts.get(h.name)
        row: dict[str, Any] = {"name": h.name, "address": str(h.address), "roles": list(h.roles),
                               "reachable": f is not None}
        if f is None:
            row["error"] = unreachable.get(h.name, "unreachable")
        else:
            row.update({
                "os": f.os.pretty, "osShort": f"{f.os.id} {f.os.version_id}".strip(),
                "kernel": f.kernel, "cpus": f.cpus, "memoryBytes": f.memory.total,
                "cgroup": f.cgroup, "swapOn": bool(f.swaps),
                "etcdUnit": f.unit(UNIT).active,
                "certs": {},
            })
            exps = host_expiries(cfg, h, f, now)
            expiries += exps
            for e in exps:
                row["certs"][e.path] = {"cn": e.cn, "notAfter": e.not_after.isoformat(),
                                        "daysLeft": e.days_left, "name": e.name, "group": e.group}
            if h.has("etcd"):
                backups.append(backup_status(cfg, h, f))
        data["hosts"].append(row)
    expiries += handed_out_rows(handed_out(cfg), now)
    data["certWindowDays"] = window_days(cfg)
    data["backups"] = backups
    data["warnings"] = [*cert_warnings(expiries, window_days(cfg)),
                        *(f"{b['name']}: {w}" for b in backups for w in b["warnings"])]
    data["kubernetes"] = kubernetes_status(cfg, facts)
    endpoint = endpoint_status(cfg, facts)
    if endpoint is not None:
        data["endpoint"] = endpoint
    data["etcd"] = await asyncio.to_thread(_etcd_over_mtls, cfg)
    if not data["etcd"].get("members"):
        # fall back to what etcdctl on a member reported during fact gathering
        for f in facts.values():
            ms = etcd_facts(f).members
            if ms:
                data["etcd"]["members"] = [
                    {k: v for k, v in _member_row(m).items() if k != "clientURLs"} for m in ms]
                data["etcd"]["source"] = f"etcdctl on {f.host}"
                break
    return data


def _etcd_over_mtls(cfg: ClusterConfig) -> dict[str, Any]:
    base = state_path(cfg)
    if not (LocalCA.directory_for(base) / "ca.crt").is_file():
        return {"error": "no etcd CA in the state directory yet (run apply)"}
    client = EtcdHttp(operator_creds(base, LocalCA.load(base)), timeout=2.0)
    out: dict[str, Any] = {"endpoints": [], "source": "mTLS from this machine"}
    members: list[EtcdMember] | None = None
    for h in cfg.etcd_hosts:
        ep = client_url(h)
        host = str(h.address)
        healthy = client.health(host)
        row: dict[str, Any] = {"name": h.name, "endpoint": ep, "healthy": healthy}
        if healthy:
            try:
                row.update(_status_row(client.status(host)))
                if members is None:
                    members = client.members(host)
            except (OSError, ValueError) as e:
                row["error"] = str(e)
        out["endpoints"].append(row)
    if members is not None:
        out["members"] = [_member_row(m) for m in members]
    out["healthy"] = sum(1 for e in out["endpoints"] if e["healthy"])
    out["total"] = len(out["endpoints"])
    return out


def _member_row(m: EtcdMember) -> dict[str, Any]:
    return {"name": m.name, "id": m.hex_id, "peerURLs": list(m.peer_urls),
            "clientURLs": list(m.client_urls), "isLearner": m.learner}


def _status_row(st: EtcdStatus) -> dict[str, Any]:
    return {"version": st.version, "dbSize": st.db_size, "raftIndex": st.raft_index,
            "leader": f"{st.leader:x}", "memberId": f"{st.member_id:x}", "isLearner": st.learner}


#: short role names for an 80-column table
ROLE_SHORT = {"control-plane": "cp", "etcd": "etcd", "worker": "worker"}
#: exit codes of `status` (README): a host unreachable, or etcd unhealthy
EXIT_UNREACHABLE = 3
EXIT_UNHEALTHY = 5


def short_cert(path: str) -> str:
    """/etc/kubernetes/pki/etcd/server.crt -> etcd/server (what kubeadm's docs call it);
    other paths (etcd's own copies) stay whole."""
    prefix = "/etc/kubernetes/pki/"
    return path[len(prefix):].removesuffix(".crt") if path.startswith(prefix) else path


def print_backups(console: Console, rows: list[dict[str, Any]]) -> None:
    """The scheduled snapshots, one line per etcd host."""
    if not rows:
        return
    if all(r.get("schedule") is None for r in rows):
        console.print("etcd backups: no schedule (etcd.backup.schedule is null)", markup=False)
        return
    t = Table("host", "timer", "last snapshot", "age", "size", "revision", "keys", "last run",
              box=None, title="etcd backups (scheduled)", title_justify="left")
    for r in rows:
        age = r.get("ageSeconds")
        t.add_row(r["name"], r.get("timer") or "", r.get("file") or "none yet",
                  fmt_age(age) if age is not None else "-",
                  f"{r['size'] / 1024:.0f}K" if r.get("size") else "-",
                  str(r.get("revision") or "-"), str(r.get("keys") or "-"),
                  r.get("lastResult") or "-")
    console.print(t)


def exit_code(data: dict[str, Any]) -> int:
    """0 all well; 3 a host cannot be reached; 5 etcd has an unhealthy member (or none)."""
    if any(not h["reachable"] for h in data["hosts"]):
        return EXIT_UNREACHABLE
    e = data["etcd"]
    if "error" in e or e.get("healthy", 0) < e.get("total", 0) or not e.get("total"):
        return EXIT_UNHEALTHY
    return 0


def _print_endpoint(console: Console, ep: dict[str, Any] | None) -> None:
    if not ep:
        return
    holders = ep["holders"]
    held = (f"held by {holders[0]}" if len(holders) == 1 else
            "held by NO control plane" if not holders else f"held by SEVERAL: {', '.join(holders)}")
    answers = "answers" if ep["answers"] else "does NOT answer from every control plane"
    console.print(f"API endpoint {ep['address']} ({ep['kind']}): {held}; {answers}", markup=False)
    t = Table("control plane", "holds", "keepalived", "local /readyz", "/readyz via endpoint", box=None)
    for r in ep["controlPlanes"]:
        if not r.get("reachable"):
            t.add_row(r["name"], "UNREACHABLE", "", "", "")
            continue
        t.add_row(r["name"], "yes" if r["holds"] else "", str(r["keepalived"]),
                  escape(str(r["local"] or "-")), escape(str(r["viaEndpoint"] or "-")))
    console.print(t)


async def run_status(cfg: ClusterConfig, console: Console, *, as_json: bool = False) -> int:
    data = await collect(cfg)
    code = exit_code(data)
    data["exitCode"] = code
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return code
    t = Table("host", "address", "roles", "state", "os", "ram", "cgroup", "etcd", box=None,
              title="hosts", title_justify="left")
    down: list[tuple[str, str]] = []
    for h in data["hosts"]:
        roles = ",".join(ROLE_SHORT.get(r, r) for r in h["roles"])
        if not h["reachable"]:
            t.add_row(h["name"], h["address"], roles, "UNREACHABLE", "", "", "", "")
            down.append((h["name"], h["error"]))
            continue
        etcd = h["etcdUnit"] if "etcd" in h["roles"] else "-"
        t.add_row(h["name"], h["address"], roles, "ok", h["osShort"],
                  f"{h['memoryBytes'] / 1024**3:.1f}G", f"v{h['cgroup']}", etcd)
    console.print(t)
    for name, why in down:
        console.print(f"{name}: UNREACHABLE: {why}", markup=False, soft_wrap=True)
    e = data["etcd"]
    if "error" in e:
        console.print(f"etcd: {e['error']}", markup=False)
    else:
        console.print(f"etcd: {e.get('healthy', 0)} of {e.get('total', 0)} endpoints healthy "
                      f"({e.get('source')})", markup=False)
        et = Table("member", "endpoint", "health", "version", "leader", "raft", "db", box=None)
        for row in e.get("endpoints", []):
            leader = "yes" if row.get("leader") and row.get("leader") == row.get("memberId") else ""
            et.add_row(row["name"], row["endpoint"], "healthy" if row["healthy"] else "UNHEALTHY",
                       str(row.get("version", "")), leader, str(row.get("raftIndex", "")),
                       f"{row.get('dbSize', 0) / 1024:.0f}K" if row.get("dbSize") else "")
        console.print(et)
        mt = Table("id", "name", "peer URLs", "learner", box=None, title="members", title_justify="left")
        for m in e.get("members", []):
            mt.add_row(m["id"], m["name"], ",".join(m["peerURLs"]), "yes" if m["isLearner"] else "")
        console.print(mt)
    print_kubernetes_status(console, data.get("kubernetes"))
    _print_endpoint(console, data.get("endpoint"))
    ct = Table("host", "certificate", "CN", "days left", box=None, title="certificates",
               title_justify="left")
    for h in data["hosts"]:
        for path, c in (h.get("certs") or {}).items():
            ct.add_row(h["name"], c.get("name") or short_cert(path), c["cn"], str(c["daysLeft"]))
    console.print(ct)
    print_backups(console, data.get("backups") or [])
    for w in data.get("warnings") or []:
        console.print(f"warning: {w}", markup=False, soft_wrap=True)
    if code:
        why = "a host is unreachable" if code == EXIT_UNREACHABLE else "etcd is not healthy"
        console.print(f"status: {why} (exit {code})", markup=False)
    return code
