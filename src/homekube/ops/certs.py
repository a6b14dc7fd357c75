"""`homekube certs` (list) and `homekube certs renew` (rolling re-issue of etcd's and kubeadm's
certificates, and of the kubelet's self-signed serving certificate).

Listing reads, in the one fact-gathering exec per host, every etcd-side certificate (kubeadm's
tree under /etc/kubernetes/pki and etcd's own copies under /etc/etcd/pki), kubeadm's own
certificates and the client certificates inside its kubeconfigs (the same set `kubeadm certs
check-expiration` reports; the key stays on the host), and the kubelet's client and serving
certificates; plus the local etcd CA, the operator's client certificate, and every admin
kubeconfig `homekube kubeconfig` wrote (recorded in `<state>/kubeconfigs.json` when written).
`status` and `check` warn about any of them expiring within `etcd.renewWithinDays`.

kubeadm's certificates: renew runs `kubeadm certs renew all` on each control plane whose
kubeadm certificates expire within the window, one control plane at a time, then restarts
kube-controller-manager and kube-scheduler there (they read their kubeconfig's certificate
only at start): their manifests are taken out of /etc/kubernetes/manifests until the old
processes are gone, put back, and the new processes must answer /healthz before the next
control plane starts. kube-apiserver is not restarted: it re-reads its serving certificate,
its kubelet-client and front-proxy certificates from disk while it runs, and its etcd client
loads apiserver-etcd-client on every new connection; so the API keeps answering throughout
(the rig test counts failed calls during a renewal: 0). The kubelet rotates its own client
certificate. Its serving certificate is self-signed (homekube sets no tlsCertFile and leaves
serverTLSBootstrap off, so nothing has to approve CSRs): renew moves the pair aside on each node
where it is due, one node at a time, and restarts the kubelet, which makes a new one; the node
is done when port 10250 serves the new certificate. Kubeconfigs handed out earlier keep the old
admin certificate: renew says so.

Renewal reuses the apply planners, not a second code path: `EtcdPkiPhase` decides which certs
to re-issue (with the renewal window widened to `--within DAYS` by handing the planners a copy
of the config whose `etcd.renewWithinDays` is DAYS; nothing else changes and nothing is
written back) and `EtcdPhase` plans the restart of each member whose certs change. Apply would
write every host's certs at once and then restart members one at a time; renew re-sequences
the same Changes member by member: member 1 gets its new files and restarts and is healthy
again, then member 2, ... so at most one member is ever down and a failure stops the run with
the rest untouched. etcd re-reads its certificate files on every new TLS handshake, so the
members not yet restarted keep serving with the new files too.

Renew refuses when any other etcd change is pending (config drift, an upgrade, a missing
member: run `homekube apply`) or when a member is down (restarting another one would lose
quorum). The operator's client certificate is re-issued locally when it falls in the window.

CA rotation (documented, not implemented). The etcd CA is valid 10 years and its key never
leaves the state directory. Rotating it without losing quorum takes three applies:

1. create the new CA beside the old one and distribute a bundle `old + new` as every trusted
   CA file (`etcd/ca.crt`, `/etc/etcd/pki/ca.crt`, kube-apiserver's `--etcd-cafile`), rolling
   restart: every member and client now trusts both;
2. re-issue every leaf from the new CA (this module's rolling renew, signing with the new key),
   and the operator certificate; kube-apiserver's `apiserver-etcd-client` too, then restart it;
3. drop the old CA from the bundles, rolling restart, and archive the old key.

Skipping step 1 splits the cluster: a member restarted with a new-CA peer cert is rejected by
members that still trust only the old CA.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from homekube.components.base import Context
from homekube.components.etcd import EtcdPhase, EtcdPkiPhase, restart_key
from homekube.components.kubernetes import (
    KUBEADM_CERTS,
    KUBELET_PKI,
    kube_cert_fact,
    kube_cert_pems,
)
from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import HostError, RefusedError
from homekube.etcd.client import operator_spec
from homekube.etcd.shell import etcd_facts
from homekube.executor import Progress
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.ops.session import (
    close_all,
    connect_some,
    gather_facts,
    handed_out_records,
    open_session,
    state_path,
)
from homekube.pki.inventory import Expiry, expiry, group_of, handed_out_rows, kubeadm_due
from homekube.pki.inventory import warnings as cert_warnings
from homekube.pki.issue import generate_key
from homekube.pki.spec import cert_info, member_files, needs_issue
from homekube.pki.store import LocalCA, _write_atomic
from homekube.plan.model import Act, Change, ChangeKey, PhasePlan, Plan, Run, Step
from homekube.plan.order import declare, one_at_a_time

CERT_PATHS = tuple(pf.path for pf in member_files(control_plane=True) if pf.kind == "cert")
LOCAL = "(local)"


class CertProbe:
    """A planning-free phase that only asks every host for its certificates (public parts)."""

    name = "certs"
    title = "certificates on hosts"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        files = dict.fromkeys(CERT_PATHS, False)
        if config.kubernetes.enabled and host.has("control-plane"):
            files |= dict.fromkeys(KUBEADM_CERTS, False)
        node = config.kubernetes.enabled and (host.has("control-plane") or host.has("worker"))
        return Probes(files=files, extra=[kube_cert_fact(host)] if node else [])

    def plan(self, ctx: Context) -> list[Step]:
        return []


def short_name(path: str) -> str:
    """/etc/kubernetes/pki/etcd/server.crt -> etcd/server (kubeadm's names); other paths whole."""
    prefix = "/etc/kubernetes/pki/"
    return path[len(prefix):].removesuffix(".crt") if path.startswith(prefix) else path


def host_expiries(cfg: ClusterConfig, h: HostSpec, f: HostFacts, now: datetime) -> list[Expiry]:
    """Every certificate `status` and `certs` know on one host, from its gathered facts:
    etcd's, kubeadm's files and kubeconfigs (control planes), the kubelet's (nodes)."""
    paths = [*CERT_PATHS]
    if cfg.kubernetes.enabled and h.has("control-plane"):
        paths += [p for p in KUBEADM_CERTS if p not in paths]
    rows: list[Expiry] = []
    for path in paths:
        st = f.file(path)
        if st is None or not st.content:
            continue
        name = short_name(path)
        try:
            rows.append(expiry(h.name, name, path, st.content, now, group_of(name)))
        except ValueError:
            continue
    if cfg.kubernetes.enabled:
        for name, pem in kube_cert_pems(f).items():
            path = (f"/etc/kubernetes/{name}" if name.endswith(".conf")
                    else f"{KUBELET_PKI}/{name}")
            try:
                rows.append(expiry(h.name, name, path, pem, now, group_of(name)))
            except ValueError:
                continue
    return rows


def handed_out_path(cfg: ClusterConfig) -> Path:
    return state_path(cfg) / "kubeconfigs.json"


def handed_out(cfg: ClusterConfig) -> list[dict[str, Any]]:
    """The admin kubeconfigs `homekube kubeconfig` wrote (state dir record; no key material)."""
    return handed_out_records(state_path(cfg))


def _row(host: str, path: str, pem: bytes, now: datetime) -> dict[str, Any]:
    try:
        info = cert_info(pem)
    except ValueError as e:
        return {"host": host, "path": path, "error": f"unparsable: {e}"}
    return {"host": host, "path": path, "name": Path(path).stem, "group": "local",
            "cn": info.subject_cn, "issuer": info.issuer_cn,
            "notAfter": info.not_after.isoformat(), "daysLeft": info.days_left(now),
            "serial": info.serial_hex}


def window_days(cfg: ClusterConfig) -> int:
    """The warning and renewal window: etcd.renewWithinDays, for every certificate."""
    return cfg.etcd.renew_within_days


async def collect(cfg: ClusterConfig) -> dict[str, Any]:
    ts, unreachable = await connect_some(cfg, cfg.hosts)
    try:
        reachable = [h for h in cfg.hosts if h.name in ts]
        facts = await gather_facts(cfg, reachable, ts, [CertProbe()])
    finally:
        await close_all(ts)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    d = LocalCA.directory_for(state_path(cfg))
    for name in ("ca.crt", "operator.crt"):
        p = d / name
        if p.is_file():
            rows.append(_row(LOCAL, str(p), p.read_bytes(), now))
    expiries: list[Expiry] = []
    for h in cfg.hosts:
        f = facts.get(h.name)
        if f is not None:
            expiries += host_expiries(cfg, h, f, now)
    expiries += handed_out_rows(handed_out(cfg), now)
    rows += [e.to_json() for e in expiries]
    return {"cluster": cfg.name, "time": now.isoformat(timespec="seconds"), "certs": rows,
            "windowDays": window_days(cfg), "warnings": cert_warnings(expiries, window_days(cfg)),
            "unreachable": unreachable}


async def run_list(cfg: ClusterConfig, console: Console, *, as_json: bool = False) -> int:
    data = await collect(cfg)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    t = Table("host", "certificate", "kind", "CN", "not after", "days left", box=None)
    for c in data["certs"]:
        if "error" in c:
            t.add_row(c["host"], c["path"], "", c["error"], "", "")
            continue
        t.add_row(c["host"], c.get("name") or c["path"], c.get("group", ""), c["cn"],
                  c["notAfter"][:10], str(c["daysLeft"]))
    console.print(t)
    for w in data["warnings"]:
        console.print(f"warning: {w}", markup=False, soft_wrap=True)
    for h, why in data["unreachable"].items():
        console.print(f"{h}: UNREACHABLE ({why})", markup=False)
    return 0


# ------------------------------------------------------------------------------------ renew


def with_window(cfg: ClusterConfig, days: int) -> ClusterConfig:
    """The same config with `etcd.renewWithinDays` = days (may exceed the file's 300 maximum)."""
    return cfg.model_copy(update={"etcd": cfg.etcd.model_copy(update={"renew_within_days": days})})


def _is_issue(c: Change) -> bool:
    return c.phase == EtcdPkiPhase.name and c.key is not None and c.key.kind == "cert" and c.key.act is Act.ISSUE


def _is_cert_restart(c: Change) -> bool:
    # a restart for certificates only: one that also carries a config or binary change is
    # not a renewal, and renew refuses it as "other changes pending"
    return c.phase == EtcdPhase.name and c.key == restart_key(["certificates"])


RENEW, KUBEADM_RENEW, KUBELET_RENEW = declare(
    "certs-renew", one_at_a_time("members", "issue", "restart"),
    one_at_a_time("control planes", "renew", "restart"), one_at_a_time("kubelets"))

#: the static pods that read a certificate only when they start (from their kubeconfig), and
#: the local port of their /healthz. kube-apiserver is not among them: it re-reads its
#: serving, kubelet-client and front-proxy certificates from disk while it runs, and its etcd
#: client loads apiserver-etcd-client on every new connection, so renewal never stops the API.
RESTARTED = (("kube-controller-manager", 10257), ("kube-scheduler", 10259))
MANIFESTS = "/etc/kubernetes/manifests"
PARKED = "/etc/kubernetes/homekube/parked"
RENEW_LOG = "/var/log/homekube/kubeadm-certs-renew.log"
#: identities of the kubeadm renewal's steps
KUBEADM_ISSUE = ChangeKey("kubeadm-certs", "all", Act.ISSUE)
STATIC_RESTART = ChangeKey("static-pod", ",".join(n for n, _ in RESTARTED), Act.RESTART)
KUBELET_SERVING = ChangeKey("kubelet-certs", "kubelet-serving", Act.ISSUE)
#: where the replaced self-signed serving pair is kept (root only), for a look afterwards
REPLACED = "/etc/kubernetes/homekube/replaced"
#: the kubelet's local health endpoint (KubeletConfiguration healthzPort default)
KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"
KUBELET_PORT = 10250


def restart_static_pods(pods: tuple[tuple[str, int], ...] = RESTARTED, seconds: int = 180) -> str:
    """Restart static pods the way kubeadm's docs say: take their manifests away until their
    processes are gone, put them back, wait for new processes answering /healthz.

    Both pods go at once (the kubelet notices a removed manifest within its ~20 s sync
    period; one at a time would wait twice). The manifests are put back whatever happens
    (trap); the PID check makes sure each process really was replaced.
    """
    lines = [f"install -d -m 0700 {PARKED}", "declare -A old",
             f"trap 'for f in {PARKED}/*.yaml; do [ -f \"$f\" ] && mv -f \"$f\" {MANIFESTS}/; "
             "done' EXIT",
             f"end=$((SECONDS + {seconds}))"]
    for name, _ in pods:
        m = f"{MANIFESTS}/{name}.yaml"
        lines += [f"[ -f {m} ] || {{ echo '{m} is missing' >&2; exit 1; }}",
                  f"old[{name}]=$(pgrep -of '^{name}( |$)' || true)",
                  f"mv -f {m} {PARKED}/"]
    for name, _ in pods:
        lines += [
            f'while [ -n "${{old[{name}]}}" ] && [ -d "/proc/${{old[{name}]}}" ]; do',
            f'  [ "$SECONDS" -lt "$end" ] || {{ echo "{name} did not stop within {seconds} s '
            'after its manifest was taken away" >&2; exit 1; }',
            "  sleep 0.2",
            "done"]
    lines += [f"mv -f {PARKED}/{name}.yaml {MANIFESTS}/" for name, _ in pods]
    for name, port in pods:
        lines += [
            f"until new=$(pgrep -of '^{name}( |$)') && [ \"$new\" != \"${{old[{name}]}}\" ] && "
            f"curl -sk --max-time 2 https://127.0.0.1:{port}/healthz 2>/dev/null | grep -qx ok; do",
            f'  [ "$SECONDS" -lt "$end" ] || {{ echo "{name} did not answer /healthz within '
            f'{seconds} s of its restart" >&2; exit 1; }}',
            "  sleep 0.2",
            "done"]
    return "\n".join(lines)


def kubeadm_renewals(cfg: ClusterConfig, facts: dict[str, HostFacts], days: int,
                     now: datetime) -> list[Change]:
    """Per control plane whose kubeadm certificates expire within `days`, in cluster.yaml
    order: `kubeadm certs renew all`, then restart the static pods that need it; one control
    plane at a time (the next starts once the previous one's pods answer again)."""
    if not cfg.kubernetes.enabled:
        return []
    out: list[Change] = []
    for i, h in enumerate(cfg.control_planes):
        f = facts.get(h.name)
        if f is None:
            continue
        due = kubeadm_due(host_expiries(cfg, h, f, now), days)
        if not due:
            continue
        first = min(due, key=lambda e: e.not_after)
        why = (f"{len(due)} of kubeadm's certificates expire within {days} days (first: "
               f"{first.name}, {first.days_left} days left)")
        renew = (f"install -d -m 0700 /var/log/homekube\n"
                 f"kubeadm certs renew all > {RENEW_LOG} 2>&1 || "
                 f"{{ tail -n 20 {RENEW_LOG} >&2; exit 1; }}")
        out.append(Change(h.name, "certs-renew", "kubeadm certificates",
                          "kubeadm certs renew all", why,
                          (Run(renew, "kubeadm certs renew all", timeout=300),),
                          order=KUBEADM_RENEW.turn(i, "renew"), key=KUBEADM_ISSUE))
        names = ", ".join(n for n, _ in RESTARTED)
        out.append(Change(h.name, "certs-renew", f"static pods {names}", f"restart {names}",
                          "they read their kubeconfig's certificate only at start "
                          "(kube-apiserver reloads its certificates and keeps serving)",
                          (Run(restart_static_pods(), f"restart {names}", timeout=300),),
                          order=KUBEADM_RENEW.turn(i, "restart"), key=STATIC_RESTART))
    return out


def renew_kubelet_serving(seconds: int = 120) -> str:
    """Replace the kubelet's self-signed serving certificate: move the pair aside and restart
    the kubelet, which generates a new one at start when `kubelet.crt`/`kubelet.key` are
    missing (no tlsCertFile is configured and serverTLSBootstrap is off, so it never rotates
    this one by itself). Done when the new certificate is on disk, the kubelet is healthy,
    and port 10250 serves the new certificate. Pods keep running through a kubelet restart."""
    crt, key = f"{KUBELET_PKI}/kubelet.crt", f"{KUBELET_PKI}/kubelet.key"
    serial = "openssl x509 -noout -serial"
    served = (f"echo | openssl s_client -connect 127.0.0.1:{KUBELET_PORT} 2>/dev/null | "
              f"{serial} 2>/dev/null")
    return "\n".join([
        f"old=$({serial} -in {crt} 2>/dev/null || true)",
        f"install -d -m 0700 {REPLACED}",
        f"[ -f {crt} ] && mv -f {crt} {REPLACED}/kubelet.crt",
        f"[ -f {key} ] && mv -f {key} {REPLACED}/kubelet.key",
        "systemctl restart kubelet.service",
        f"end=$((SECONDS + {seconds}))",
        f"until new=$({serial} -in {crt} 2>/dev/null) && [ \"$new\" != \"$old\" ] && "
        f"curl -s --max-time 2 {KUBELET_HEALTHZ} 2>/dev/null | grep -qx ok && "
        f"[ \"$({served})\" = \"$new\" ]; do",
        f'  [ "$SECONDS" -lt "$end" ] || {{ echo "the kubelet did not serve a new certificate '
        f'on :{KUBELET_PORT} within {seconds} s of its restart" >&2; exit 1; }}',
        "  sleep 0.2",
        "done"])


def kubelet_serving_renewals(cfg: ClusterConfig, facts: dict[str, HostFacts], days: int,
                             now: datetime) -> list[Change]:
    """Per node whose kubelet serving certificate expires within `days`, in cluster.yaml
    order, one node at a time: a new self-signed certificate (see renew_kubelet_serving)."""
    if not cfg.kubernetes.enabled:
        return []
    out: list[Change] = []
    nodes = [h for h in cfg.hosts if h.has("control-plane") or h.has("worker")]
    for i, h in enumerate(nodes):
        f = facts.get(h.name)
        if f is None:
            continue
        due = [e for e in host_expiries(cfg, h, f, now)
               if e.name == "kubelet-serving" and e.days_left < days]
        if not due:
            continue
        why = (f"the kubelet's self-signed serving certificate expires within {days} days "
               f"({due[0].days_left} days left); the kubelet makes a new one when it starts "
               "without one")
        out.append(Change(h.name, "certs-renew", "kubelet serving certificate",
                          "new kubelet serving certificate (restart the kubelet)", why,
                          (Run(renew_kubelet_serving(), "renew the kubelet serving certificate",
                               timeout=180),),
                          order=KUBELET_RENEW.turn(i), key=KUBELET_SERVING))
    return out


def rolling_plan(plan: Plan, order: list[str]) -> Plan:
    """Re-sequence renewals member by member: its new files, then its restart, then the next.

    Raises RefusedError when the plan holds anything besides renewals and their restarts.
    """
    other = [c for c in plan.changes if not (_is_issue(c) or _is_cert_restart(c))]
    if other:
        listing = "\n".join(f"  {c.host}: {c.summary} ({c.why})" for c in other)
        raise RefusedError("other etcd changes are pending; renew only re-issues "
                           f"certificates:\n{listing}",
                           hint="run `homekube apply` first (it also renews what is inside "
                                "etcd.renewWithinDays)")
    steps: list[Step] = []
    for i, host in enumerate(order):
        mine = [c for c in plan.changes if c.host == host]
        steps += [replace(c, order=RENEW.turn(i, "issue")) for c in mine if _is_issue(c)]
        steps += [replace(c, order=RENEW.turn(i, "restart")) for c in mine if _is_cert_restart(c)]
    phase = PhasePlan("certs-renew", "renew certificates", tuple(steps))
    return Plan(plan.cluster, plan.hosts, [phase])


def _renew_operator(cfg: ClusterConfig, days: int, now: datetime) -> str | None:
    base = state_path(cfg)
    d = LocalCA.directory_for(base)
    cert = d / "operator.crt"
    if not cert.is_file():
        return None
    ca = LocalCA.load(base)
    window = timedelta(days=days)
    need, why = needs_issue(operator_spec(), cert.read_bytes(), ca.cert_pem, now, window)
    if not need:
        return None
    key = generate_key("ecdsa-p256")
    _write_atomic(d / "operator.key", key, 0o600)
    _write_atomic(cert, ca.issue(operator_spec(), key, now), 0o644)
    return why


async def run_renew(cfg: ClusterConfig, console: Console, *, within: int | None, yes: bool,
                    progress: Progress | None = None,
                    confirm: Callable[[str], bool] | None = None) -> int:
    days = within if within is not None else cfg.etcd.renew_within_days
    if days < 1:
        raise RefusedError("--within must be at least 1 day")
    if not (LocalCA.directory_for(state_path(cfg)) / "ca.crt").is_file():
        raise RefusedError("there is no etcd CA in the state directory yet",
                           hint="run `homekube apply` first")
    wide = with_window(cfg, days)
    s = await open_session(wide, lock=yes or confirm is not None,
                           phases=[EtcdPkiPhase(), EtcdPhase(), CertProbe()])
    try:
        ctx = s.context()
        down = [h.name for h in ctx.hosts() if h.has("etcd") and (
            not s.facts[h.name].unit("etcd.service").is_active
            or etcd_facts(s.facts[h.name]).members is None)]
        plan = s.plan()
        now = datetime.now(UTC)
        kube = kubeadm_renewals(cfg, dict(s.facts), days, now)
        kubelets = kubelet_serving_renewals(cfg, dict(s.facts), days, now)
        etcd_due = any(_is_issue(c) for c in plan.changes)
        if not etcd_due and not kube and not kubelets:
            console.print(f"no certificate expires within {days} days; nothing to renew",
                          markup=False)
            return 0
        if etcd_due and down:
            raise RefusedError(f"etcd is not healthy on {', '.join(down)}: restarting another "
                               "member could lose quorum",
                               hint="bring every member back first (`homekube status`)")
        rolling = (rolling_plan(plan, [h.name for h in cfg.etcd_hosts]) if etcd_due
                   else Plan(plan.cluster, plan.hosts, []))
        steps = [*rolling.changes, *kube, *kubelets]
        rolling = Plan(plan.cluster, plan.hosts,
                       [PhasePlan("certs-renew", "renew certificates", tuple(steps))])
        renewals = [c for c in rolling.changes if _is_issue(c)]
        for c in renewals:
            console.print(f"{c.host}: {c.summary}: {c.why}", markup=False)
        restarts = [c.host for c in rolling.changes if _is_cert_restart(c)]
        if restarts:
            console.print(f"etcd restart order (one member at a time, each healthy before the "
                          f"next): {', '.join(restarts)}", markup=False)
        kube_hosts = [c.host for c in kube if c.key == KUBEADM_ISSUE]
        for c in [*kube, *kubelets]:
            console.print(f"{c.host}: {c.summary}: {c.why}", markup=False)
        if not (yes or (confirm is not None and confirm(
                "Renew them (etcd members, control planes and kubelets one at a time)?"))):
            console.print("nothing was changed; run again with --yes to renew", markup=False)
            return 0
        t0 = time.monotonic()
        result = await s.apply(rolling, progress)
        took = time.monotonic() - t0
    finally:
        await s.close()
    if not result.ok:
        first = result.failed[0]
        raise HostError(f"renewal stopped after {len(result.applied)} step(s): {first.message}",
                        host=first.host or "?", phase=first.phase, step=first.step,
                        hint="what was already renewed keeps its new certificates; "
                             "run renew again")
    op = _renew_operator(cfg, days, datetime.now(UTC))
    if op:
        console.print(f"{LOCAL}: re-issued the operator certificate ({op})", markup=False)
    if renewals:
        console.print(f"renewed {len(renewals)} certificate(s) on {len(set(restarts))} member(s)",
                      markup=False)
    if kube_hosts:
        console.print(f"renewed kubeadm's certificates on {len(kube_hosts)} control plane(s): "
                      f"{', '.join(kube_hosts)}", markup=False)
    if kubelets:
        console.print(f"renewed the kubelet serving certificate on {len(kubelets)} node(s): "
                      f"{', '.join(c.host for c in kubelets)}", markup=False)
    console.print(f"certs renew took {took:.1f}s", markup=False)
    old = [r for r in handed_out(cfg) if kube_hosts]
    if old:
        console.print(f"{len(old)} kubeconfig(s) written by `homekube kubeconfig` still carry the "
                      "old admin certificate: run `homekube kubeconfig` again", markup=False)
    return 0

