"""A run against the cluster: connect to every host, lock, gather facts, plan, apply.

Order matters for safety: every host is connected (and, for apply, locked) and every
preflight check passes before the first change is made on any host, so an unreachable
host, a wrong key or too little RAM stops the run with nothing touched.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from homekube.components.base import Context, LocalState, Phase
from homekube.components.hostprep import Finding, preflight
from homekube.components.planner import build_plan
from homekube.components.registry import all_phases
from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import ConnectError, HomekubeError, PreflightError
from homekube.executor import ApplyResult, Progress, execute
from homekube.facts.base import complete, compose, parse_all
from homekube.facts.host import HostFacts, build_host_facts
from homekube.facts.system import Probes, facts_for
from homekube.pki.store import LocalCA
from homekube.plan.model import Plan
from homekube.transport.base import Transport
from homekube.transport.ssh import SshTarget, SshTransport

log = logging.getLogger(__name__)


def ssh_target(cfg: ClusterConfig, h: HostSpec) -> SshTarget:
    per = h.ssh
    alias = h.ssh_host is not None
    return SshTarget(
        name=h.name,
        # a DNS name from cluster.yaml: connect to it, so known_hosts entries for it match
        host=h.ssh_host or h.dns_name or str(h.address),
        user=(per.user if per and per.user else (None if alias else cfg.ssh.user)),
        port=(per.port if per and per.port else (None if alias else cfg.ssh.port)),
        key=(per.key if per and per.key else cfg.ssh.key),
        known_hosts=cfg.ssh.known_hosts,
        config=cfg.ssh.config,
        connect_timeout=cfg.ssh.connect_timeout,
    )


async def connect_all(cfg: ClusterConfig, hosts: Sequence[HostSpec]) -> dict[str, Transport]:
    """Connect to every host in parallel; if any fails, close the rest and report all."""
    results = await asyncio.gather(
        *(SshTransport.connect(ssh_target(cfg, h)) for h in hosts), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    ok: dict[str, Transport] = {r.host: r for r in results if isinstance(r, Transport)}
    if errors:
        await close_all(ok)
        for e in errors:
            if not isinstance(e, HomekubeError):
                raise e
        if len(errors) == 1:
            raise errors[0]
        msgs = "\n".join(str(e) for e in errors)
        reached = all("cannot reach" in str(e) or "cannot connect" in str(e) for e in errors)
        hints = {e.hint for e in errors if isinstance(e, HomekubeError) and e.hint}
        raise ConnectError(f"{len(errors)} hosts cannot be {'reached' if reached else 'used'}:\n{msgs}",
                           hint=hints.pop() if len(hints) == 1 else None)
    return ok


async def connect_some(
    cfg: ClusterConfig, hosts: Sequence[HostSpec]
) -> tuple[dict[str, Transport], dict[str, str]]:
    """Connect to whatever answers; return (transports, {host: why unreachable}). For status."""
    results = await asyncio.gather(
        *(SshTransport.connect(ssh_target(cfg, h)) for h in hosts), return_exceptions=True
    )
    ok: dict[str, Transport] = {}
    bad: dict[str, str] = {}
    for h, r in zip(hosts, results, strict=True):
        if isinstance(r, Transport):
            ok[h.name] = r
        elif isinstance(r, HomekubeError):
            bad[h.name] = r.message
        elif isinstance(r, BaseException):
            raise r
    return ok, bad


async def close_all(ts: dict[str, Transport]) -> None:
    await asyncio.gather(*(t.close() for t in ts.values()), return_exceptions=True)


def probes_for(cfg: ClusterConfig, host: HostSpec, phases: Sequence[Phase]) -> Probes:
    p = Probes()
    for ph in phases:
        p.merge(ph.probes(cfg, host))
    return p


async def gather_facts(
    cfg: ClusterConfig, hosts: Sequence[HostSpec], ts: dict[str, Transport], phases: Sequence[Phase],
    *, lock_as: str | None = None,
) -> dict[str, HostFacts]:
    """Facts of every host, one exec each; with `lock_as`, each host is locked first, in
    that same exec, so the facts are read under the lock the run then keeps."""
    async def one(h: HostSpec) -> HostFacts:
        facts = facts_for(probes_for(cfg, h, phases))
        script, marker = compose(facts)
        if lock_as is not None:
            res = await ts[h.name].lock_and_run(lock_as, script, timeout=120)
        else:
            res = await ts[h.name].run(script, timeout=120)
        if not complete(res.stdout, marker):
            raise ConnectError(f"gathering facts did not finish (exit {res.exit_status}): "
                               f"{res.stderr.strip()[-300:]}", host=h.name)
        return build_host_facts(h.name, parse_all(facts, res.stdout, marker))

    got = await asyncio.gather(*(one(h) for h in hosts))
    return {f.host: f for f in got}


def inventory_path(cfg: ClusterConfig) -> Path:
    return state_path(cfg) / "inventory.json"


def read_inventory(cfg: ClusterConfig) -> list[HostSpec]:
    """The hosts of the last successful apply (so a host dropped from cluster.yaml is known)."""
    p = inventory_path(cfg)
    if not p.is_file():
        return []
    try:
        data = json.loads(p.read_text())
        hosts = [HostSpec.model_validate(h) for h in data.get("hosts", [])]
        names = data.get("dnsNames", {})
        for h in hosts:
            if isinstance(names, dict) and isinstance(names.get(h.name), str):
                h.set_dns_name(names[h.name])
        return hosts
    except (ValueError, TypeError) as e:
        log.warning("ignoring unreadable inventory %s: %s", p, e)
        return []


def write_inventory(cfg: ClusterConfig) -> None:
    from homekube.executor import write_local
    from homekube.plan.model import LocalWrite

    hosts = [h.model_dump(mode="json", by_alias=True, exclude_none=True) for h in cfg.hosts]
    names = {h.name: h.dns_name for h in cfg.hosts if h.dns_name}
    body = json.dumps({"cluster": cfg.name, "hosts": hosts, **({"dnsNames": names} if names else {})},
                      indent=2).encode()
    p = inventory_path(cfg)
    try:
        # an apply that changed nothing has nothing to record: no write, no fsync (a loaded
        # disk made the fsync alone take 2 s of a no-op apply)
        if p.read_bytes() == body and p.stat().st_mode & 0o777 == 0o600:
            return
    except OSError:
        pass
    write_local(LocalWrite(str(p), body, 0o600))


def state_path(cfg: ClusterConfig) -> Path:
    return Path(os.path.expanduser(str(cfg.state_dir)))


def read_local_state(cfg: ClusterConfig, *, create: bool = False) -> LocalState:
    """The etcd CA from the operator's state dir (`create` makes it: apply only), and the
    kubeconfigs `homekube kubeconfig` recorded there that still exist."""
    base = state_path(cfg)
    kubeconfigs = _handed_out_kubeconfigs(base)
    if create:
        ca = LocalCA.load_or_create(base, key_type=cfg.etcd.key_type)
        return LocalState(etcd_ca_cert=ca.cert_pem, etcd_ca_key=ca.key_pem, kubeconfigs=kubeconfigs)
    if not (LocalCA.directory_for(base) / "ca.crt").is_file():
        return LocalState(kubeconfigs=kubeconfigs)
    ca = LocalCA.load(base)
    return LocalState(etcd_ca_cert=ca.cert_pem, etcd_ca_key=ca.key_pem, kubeconfigs=kubeconfigs)


def handed_out_records(base: Path) -> list[dict[str, Any]]:
    """The admin kubeconfigs `homekube kubeconfig` wrote, as recorded in the state dir
    (`kubeconfigs.json`, no key material); [] when there is no readable record."""
    try:
        data = json.loads((base / "kubeconfigs.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    return [r for r in data.get("kubeconfigs", []) if isinstance(r, dict)]


def _handed_out_kubeconfigs(base: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for r in handed_out_records(base):
        path = Path(str(r.get("path", "")))
        if not path.is_file():
            continue
        try:
            out[str(path)] = path.read_bytes()
        except OSError:
            continue
    return out


@dataclass
class Session:
    """Connections, facts and the plan of one run; `close()` releases locks and sockets."""

    config: ClusterConfig
    transports: dict[str, Transport]
    facts: dict[str, HostFacts]
    findings: list[Finding]
    phases: list[Phase]
    now: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    local: LocalState | None = None
    removed: tuple[HostSpec, ...] = ()
    unreachable_removed: dict[str, str] = field(default_factory=dict)

    def context(self) -> Context:
        if self.local is None:
            self.local = read_local_state(self.config, create=self.extra.get("create_state", False))
        return Context(self.config, self.facts, self.local, self.now, removed=self.removed)

    def plan(self, only: set[str] | None = None) -> Plan:
        return build_plan(self.phases, self.context(), only)

    async def apply(self, plan: Plan, progress: Progress | None = None) -> ApplyResult:
        return await execute(plan, self.transports, progress=progress,
                             timeouts=timeouts_of(self.config))

    @property
    def notices(self) -> list[tuple[str, str]]:
        """(host, text) the hosts said while being locked (an orphaned step they stopped)."""
        return [(h, n) for h, t in self.transports.items() for n in t.notices]

    async def close(self) -> None:
        await close_all(self.transports)


def timeouts_of(cfg: ClusterConfig) -> dict[str, float]:
    """Seconds per kind of step, from cluster.yaml's `timeouts`."""
    return {k: float(v) for k, v in cfg.timeouts.model_dump().items()}


def holder() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since {datetime.now(UTC):%H:%M:%S}Z"


async def open_session(
    cfg: ClusterConfig,
    *,
    lock: bool,
    transports: dict[str, Transport] | None = None,
    phases: list[Phase] | None = None,
    hosts: Sequence[HostSpec] | None = None,
    enforce_preflight: bool = True,
) -> Session:
    """Connect, lock (for changes), gather facts and run preflight, touching nothing."""
    phases = phases if phases is not None else all_phases()
    hosts = list(hosts if hosts is not None else cfg.hosts)
    ts = transports if transports is not None else await connect_all(cfg, hosts)
    removed: list[HostSpec] = []
    gone: dict[str, str] = {}
    try:
        if transports is None:
            # hosts homekube managed before and cluster.yaml dropped: they need cleaning up
            old = [h for h in read_inventory(cfg) if h.name not in {x.name for x in cfg.hosts}]
            if old:
                more, gone = await connect_some(cfg, old)
                ts.update(more)
                removed = [h for h in old if h.name in more]
        facts = await gather_facts(cfg, [*hosts, *removed], ts, phases,
                                   lock_as=holder() if lock else None)
        findings = [x for h in hosts for x in preflight(cfg, h, facts[h.name])]
        fatal = [(x.host, x.message) for x in findings if x.fatal]
        if fatal and enforce_preflight:
            raise PreflightError(fatal, hint="fix the hosts or cluster.yaml; nothing was changed")
    except BaseException:
        await close_all(ts)
        raise
    return Session(cfg, ts, facts, findings, phases, datetime.now(UTC),
                   extra={"create_state": lock}, removed=tuple(removed), unreachable_removed=gone)
