"""A highly available API endpoint without an external load balancer: a keepalived VIP (pure).

`kubernetes.endpoint: {kind: vip, address: A}` makes `A:6443` the cluster's
controlPlaneEndpoint (in every kubeconfig kubeadm writes, and in the API server certificate's
SANs from the first `kubeadm init`), and puts on every control plane, before kubeadm runs:

    keepalived (the distro package)          VRRP, unicast to the other control planes
    /etc/keepalived/keepalived.conf          one vrrp_instance holding A on the interface of
                                             the host's own address
    /etc/keepalived/homekube-check-apiserver.sh   exits 0 while https://127.0.0.1:6443/readyz
                                             answers `ok` (keepalived's track script)

Every control plane has priority 100; a failing check takes 50 off. So the address sits on a
control plane whose API server is ready, moves within about three advertisement intervals
(1 s each) when its holder dies, and never moves between two healthy holders (VRRP does not
preempt at equal priority). The check starts as failed (`init_fail`): a control plane that
boots again does not take the address before its own API server is ready. A lone control
plane with no API server yet (before `kubeadm init`) still holds the address (50 beats no
one), which is what `kubeadm init` needs to reach the API through it.

A running cluster with one control plane whose API is that control plane's own address (no
endpoint, or controlPlaneEndpoint at it) is moved to the virtual address when cluster.yaml sets
`kubernetes.endpoint` (and, usually, gives more hosts the control-plane role):

    etcd           the new members join first, one at a time (the etcd phase, as always)
    endpoint       keepalived on every control plane; then, on the running one, a wait until
                   the address is up there and answers /readyz (2 min), before anything points
                   at it (a new control plane's check fails until its API server is ready, so
                   the running one, at full priority, holds the address)
    kubeadm        the running cluster follows cluster.yaml (:mod:`homekube.components.cp_config`):
                   kubeadm-config, the API server certificate (the address in its SANs),
                   --etcd-servers, admin.conf, super-admin.conf, the workers' kubelet.conf,
                   kube-proxy's and cluster-info's kubeconfigs, the kubeconfigs `homekube
                   kubeconfig` handed out; then a token, upload-certs, and the new control
                   planes join one at a time

The workload keeps running: the API server of the lone control plane restarts once (its new
--etcd-servers), each worker's kubelet restarts once, kube-proxy rolls out again; no pod is
evicted and no Service stops answering.

Refused before any change (the plan stops with the reason):

* the address outside the network of a control plane's own address (VRRP moves it between
  hosts of one network);
* a running cluster whose API endpoint (admin.conf's `server`) is not the one cluster.yaml
  wants, except the conversion above: moving from one endpoint to another (a DNS name, another
  address) or converting with more than one control plane running is not done;
* a running cluster without an endpoint (`endpoint` or `controlPlaneEndpoint`) that would get
  more control planes: they would all depend on the first one's address;
* a host running a control plane (its kube-apiserver manifest) that lost the control-plane
  role: removing a control plane is not supported yet (3 → 1 is never done half-way);
* an even number of etcd members with an endpoint (cluster.yaml's checks).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ruamel.yaml import YAML

from homekube.components.base import Context
from homekube.components.kubeadm_base import (
    ADMIN_CONF,
    APISERVER_MANIFEST,
    KUBELET_CONF,
    SUPER_ADMIN_CONF,
)
from homekube.components.reset import PACKAGES_RECORD
from homekube.config.model import ClusterConfig, EndpointSpec, HostSpec
from homekube.errors import RefusedError
from homekube.facts.base import Fact
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.osfamily import family_of
from homekube.plan.model import Change, NoChange, Run, Step, WriteFile
from homekube.plan.resources import file_step, unit_step
from homekube.render.kubernetes import API_SERVER_PORT, control_plane_endpoint
from homekube.shell import poll_until
from homekube.shell import sh as hk_sh

KEEPALIVED_DIR = "/etc/keepalived"
KEEPALIVED_CONF = f"{KEEPALIVED_DIR}/keepalived.conf"
CHECK_SCRIPT = f"{KEEPALIVED_DIR}/homekube-check-apiserver.sh"
UNIT = "keepalived.service"
PACKAGES = ("keepalived", "curl")
#: priority of every control plane, and what a failing API server check takes off
PRIORITY = 100
CHECK_WEIGHT = 50
ADVERT_SECONDS = 1

CHECK = f"""#!/bin/sh
# Managed by homekube (kubernetes.endpoint): keepalived's check of the local API server.
# Exit 0 only while kube-apiserver on this host says it is ready.
[ "$(curl -sk --max-time 2 https://127.0.0.1:{API_SERVER_PORT}/readyz 2>/dev/null)" = ok ]
""".encode()


@dataclass(frozen=True)
class EndpointFacts:
    """What a node says about the API endpoint (one snippet in the one facts exec)."""

    server: str | None = None  # admin.conf's (or kubelet.conf's) `server:`
    local: str | None = None  # this host's kube-apiserver /readyz (control planes)
    via_vip: str | None = None  # /readyz through the virtual address
    kubelet: str | None = None  # kubelet.conf's `server:`
    super_admin: str | None = None  # super-admin.conf's `server:` (the first control plane)
    #: the running kube-apiserver manifest's --etcd-servers (None: no manifest here)
    etcd_servers: tuple[str, ...] | None = None
    #: read through the API from a control plane whose API server is ready (None: not read)
    cluster_config: dict[str, Any] | None = None  # kubeadm-config's ClusterConfiguration
    proxy: str | None = None  # the kube-proxy ConfigMap's kubeconfig `server:`
    cluster_info: str | None = None  # kube-public/cluster-info's kubeconfig `server:`

    @property
    def control_plane_endpoint(self) -> str | None:
        v = (self.cluster_config or {}).get("controlPlaneEndpoint")
        return str(v) if v else None

    @property
    def config_etcd(self) -> tuple[str, ...] | None:
        ext = ((self.cluster_config or {}).get("etcd") or {}).get("external") or {}
        eps = ext.get("endpoints")
        return tuple(str(e) for e in eps) if isinstance(eps, list) else None

    @property
    def config_sans(self) -> tuple[str, ...]:
        sans = ((self.cluster_config or {}).get("apiServer") or {}).get("certSANs") or []
        return tuple(str(s) for s in sans)


def parse_endpoint_fact(text: str) -> EndpointFacts:
    kv = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    etcd = None
    if "etcd" in kv:
        etcd = tuple(e for e in kv["etcd"].split(",") if e)
    cc: dict[str, Any] | None = None
    if kv.get("config"):
        try:
            loaded = YAML(typ="safe").load(base64.b64decode(kv["config"]).decode())
        except Exception:
            loaded = None
        cc = loaded if isinstance(loaded, dict) else None
    return EndpointFacts(server=kv.get("server") or None, local=kv.get("local") or None,
                         via_vip=kv.get("vip") or None, kubelet=kv.get("kubelet") or None,
                         super_admin=kv.get("superadmin") or None, etcd_servers=etcd,
                         cluster_config=cc, proxy=kv.get("proxy") or None,
                         cluster_info=kv.get("clusterinfo") or None)


def _server_of(path: str) -> str:
    return f"sed -n 's/^ *server: *//p' {path} | head -n1"


def endpoint_fact(cfg: ClusterConfig, host: HostSpec) -> Fact[EndpointFacts]:
    cmd = [
        f"for c in {ADMIN_CONF} {KUBELET_CONF}; do [ -f $c ] || continue; "
        f"echo \"server=$({_server_of('$c')})\"; break; done",
        f'[ -f {KUBELET_CONF} ] && echo "kubelet=$({_server_of(KUBELET_CONF)})"',
    ]
    def readyz(addr: object) -> str:
        return (f"curl -sk --max-time 2 https://{addr}:{API_SERVER_PORT}/readyz 2>&1 "
                "| head -c 100 | tr -d '\\n'")

    if host.has("control-plane"):
        k = f"kubectl --kubeconfig={ADMIN_CONF} --request-timeout=5s"
        server = "sed -n 's/^ *server: *//p' | head -n1"
        cmd += [
            f"if [ -f {APISERVER_MANIFEST} ]; then",
            f'  hk_local=$({readyz("127.0.0.1")}); echo "local=$hk_local"',
            f"  echo \"etcd=$(grep -o -- '--etcd-servers=[^ ]*' {APISERVER_MANIFEST} | head -n1 "
            "| cut -d= -f2-)\"",
            "fi",
            f'[ -f {SUPER_ADMIN_CONF} ] && echo "superadmin=$({_server_of(SUPER_ADMIN_CONF)})"',
            # the cluster's own copies, where the API answers: three reads at once
            f'if [ -f {ADMIN_CONF} ] && [ "${{hk_local:-}}" = ok ] && command -v kubectl >/dev/null; then',
            "  hk_d=$(mktemp -d)",
            f"  {k} -n kube-system get configmap kubeadm-config "
            "-o jsonpath='{.data.ClusterConfiguration}' 2>/dev/null | base64 -w0 > $hk_d/config &",
            f"  {k} -n kube-system get configmap kube-proxy "
            f"-o jsonpath='{{.data.kubeconfig\\.conf}}' 2>/dev/null | {server} > $hk_d/proxy &",
            f"  {k} -n kube-public get configmap cluster-info "
            f"-o jsonpath='{{.data.kubeconfig}}' 2>/dev/null | {server} > $hk_d/clusterinfo &",
            "  wait",
            "  for x in config proxy clusterinfo; do echo \"$x=$(cat $hk_d/$x)\"; done; rm -rf $hk_d",
            "fi",
        ]
    if cfg.kubernetes.endpoint is not None:
        cmd.append(f'echo "vip=$({readyz(cfg.kubernetes.endpoint.address)})"')
    return Fact("endpoint", "\n".join(cmd), parse_endpoint_fact)


def endpoint_facts(f: HostFacts) -> EndpointFacts:
    v = f.extra.get("endpoint")
    return v if isinstance(v, EndpointFacts) else EndpointFacts()


def interface_of(f: HostFacts, address: str) -> tuple[str, int] | None:
    """(device, prefix length) of `address` on the host; None when it does not hold it."""
    for a in f.addresses:
        if a.address == address:
            return a.dev, a.prefix
    return None


def keepalived_conf(cfg: ClusterConfig, host: HostSpec, iface: str, prefix: int) -> bytes:
    ep = cfg.kubernetes.endpoint
    assert ep is not None
    peers = [str(h.ipv4) for h in cfg.control_planes if h.name != host.name and h.ipv4]
    lines = [
        "# Managed by homekube: kubernetes.endpoint in cluster.yaml (a virtual API address).",
        "global_defs {",
        f"    router_id homekube-{host.name}",
        "    script_user root",
        "    enable_script_security",
        "}",
        "",
        "vrrp_script homekube_apiserver {",
        f'    script "{CHECK_SCRIPT}"',
        "    interval 1",
        "    timeout 3",
        "    fall 2",
        "    rise 2",
        f"    weight -{CHECK_WEIGHT}",
        "    init_fail",
        "}",
        "",
        "vrrp_instance homekube_api {",
        "    state BACKUP",
        f"    interface {iface}",
        f"    virtual_router_id {ep.router_id}",
        f"    priority {PRIORITY}",
        f"    advert_int {ADVERT_SECONDS}",
        f"    unicast_src_ip {host.ipv4}",
        "    unicast_peer {",
        *(f"        {p}" for p in peers),
        "    }",
        "    virtual_ipaddress {",
        f"        {ep.address}/{prefix} dev {iface}",
        "    }",
        "    track_script {",
        "        homekube_apiserver",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines).encode()


class EndpointPhase:
    name = "endpoint"
    title = "API endpoint (keepalived virtual address)"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        if not config.kubernetes.enabled or not (host.has("control-plane") or host.has("worker")):
            return Probes()
        files: dict[str, bool] = {APISERVER_MANIFEST: False}
        if host.has("control-plane") and config.kubernetes.endpoint is not None:
            files |= {KEEPALIVED_CONF: False, CHECK_SCRIPT: False}
            return Probes(files=files, units={UNIT}, packages=set(PACKAGES),
                          extra=[endpoint_fact(config, host)])
        return Probes(files=files, extra=[endpoint_fact(config, host)])

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        if not cfg.kubernetes.enabled:
            # the same words as the other Kubernetes phases (components.kubernetes.LAYER_OFF)
            return [NoChange(h.name, self.name, "kubernetes", "Kubernetes layer is off in cluster.yaml")
                    for h in ctx.hosts()]
        refuse_unsupported(ctx)
        ep = cfg.kubernetes.endpoint
        if ep is None:
            return []
        steps: list[Step] = []
        for h in ctx.hosts():
            if h.has("control-plane"):
                steps += self._host(ctx, h, ctx.facts[h.name], ep)
        return steps + self._wait_for_address(ctx, ep)

    def _wait_for_address(self, ctx: Context, ep: EndpointSpec) -> list[Step]:
        """On a running cluster, the address must answer before anything is pointed at it
        (a cluster being moved to the endpoint: kubeadm-config, kubeconfigs, joins)."""
        ready = [h for h in ctx.hosts() if h.has("control-plane")
                 and ctx.facts[h.name].file(APISERVER_MANIFEST) is not None
                 and endpoint_facts(ctx.facts[h.name]).local == "ok"]
        if not ready:
            return []
        h = ready[0]
        e = endpoint_facts(ctx.facts[h.name])
        addr = f"{ep.address}:{API_SERVER_PORT}"
        if e.via_vip == "ok":
            return [NoChange(h.name, self.name, "address", f"{addr} answers /readyz")]
        held = f"ip -o addr show | grep -qwF -- {ep.address}"
        answers = (f"[ \"$(curl -sk --max-time 2 https://{addr}/readyz)\" = ok ]")
        others = [x.name for x in ready[1:]]
        cond = (f"{{ {held} || [ -n \"{' '.join(others)}\" ]; }} && {answers}" if others
                else f"{held} && {answers}")
        wait = poll_until(hk_sh(cond, compound=True), seconds=120, every=1,
                          failure=f"{h.name} (endpoint address): {addr} is not up and answering "
                                  "/readyz after 120s",
                          diagnose=[hk_sh(f"systemctl status --no-pager {UNIT} | tail -n 15 >&2",
                                          compound=True),
                                    hk_sh("ip -o -4 addr show >&2", compound=True)])
        return [Change(h.name, self.name, "address",
                       f"wait until {ep.address} is up{' here' if not others else ''} and "
                       f"{addr} answers /readyz",
                       f"the running cluster's API is not reachable through {addr} yet "
                       f"({e.via_vip or 'no answer'}); nothing may point at it before it answers",
                       (Run(wait.text, f"wait for {addr} (up to 2 min)", kind="wait"),))]

    def _host(self, ctx: Context, h: HostSpec, f: HostFacts, ep: EndpointSpec) -> list[Step]:
        ph = self.name
        have = interface_of(f, str(h.ipv4)) if h.ipv4 else None
        if have is None:
            raise RefusedError(f"{h.name} does not hold its address {h.address}, so the virtual "
                               f"address {ep.address} has no network to sit on", host=h.name)
        dev, prefix = have
        net = ipaddress.ip_network(f"{h.ipv4}/{prefix}", strict=False)
        if ep.address not in net:
            raise RefusedError(
                f"kubernetes.endpoint.address {ep.address} is not on {h.name}'s network {net} "
                f"({dev}): a virtual address can only move between hosts of one network",
                host=h.name, hint=f"pick a free address in {net}")
        iface = ep.interface or dev
        fam = family_of(f.os)
        steps: list[Step] = []
        missing = sorted(p for p in PACKAGES if not f.installed(p))
        script = file_step(f, ph, WriteFile(CHECK_SCRIPT, CHECK, 0o755),
                           "keepalived moves the address away from a control plane whose API "
                           "server is not ready")
        conf = file_step(f, ph, WriteFile(KEEPALIVED_CONF, keepalived_conf(ctx.config, h, iface, prefix), 0o644),
                         f"the API endpoint {ep.address}:{API_SERVER_PORT} moves between the control planes")
        if isinstance(script, Change) or isinstance(conf, Change):
            # keepalived's directory first: the package may not be there yet
            mkdir = Run(f"install -d -m 0755 {KEEPALIVED_DIR}")
            if isinstance(script, Change):
                script = replace(script, actions=(mkdir, *script.actions))
            elif isinstance(conf, Change):
                conf = replace(conf, actions=(mkdir, *conf.actions))
        steps += [script, conf]
        if missing:
            if fam is None:
                raise RefusedError(f"cannot install keepalived on {f.os.pretty}", host=h.name)
            steps.append(Change(h.name, ph, "packages", f"install {', '.join(missing)}",
                                "keepalived holds the virtual API address (VRRP)",
                                (Run(fam.install_recorded(missing, PACKAGES_RECORD),
                                     f"install {' '.join(missing)}"),)))
        else:
            steps.append(NoChange(h.name, ph, "packages", f"installed: {', '.join(PACKAGES)}"))
        st = f.unit(UNIT)
        if st.is_active and isinstance(conf, Change):
            # a reload keeps the address where it is; a restart would drop it for a moment
            steps.append(Change(h.name, ph, f"unit {UNIT}", f"reload {UNIT}",
                                f"{KEEPALIVED_CONF} changed",
                                (Run(f"systemctl enable {UNIT} >/dev/null 2>&1; systemctl reload {UNIT}"),)))
        else:
            steps.append(unit_step(f, ph, UNIT, why="it holds the virtual API address"))
        return steps


def refuse_unsupported(ctx: Context) -> None:
    """Raise RefusedError for a control-plane change homekube cannot do whole (module doc)."""
    cfg = ctx.config
    want = f"https://{control_plane_endpoint(cfg)}"
    running = [h for h in ctx.hosts() if ctx.facts[h.name].file(APISERVER_MANIFEST) is not None]
    for h in [*ctx.hosts(), *ctx.removed]:
        f = ctx.facts.get(h.name)
        if f is None or f.file(APISERVER_MANIFEST) is None:
            continue
        if h in ctx.removed or not h.has("control-plane"):
            what = "is no longer in cluster.yaml" if h in ctx.removed else "lost the control-plane role"
            raise RefusedError(
                f"{h.name} runs a control plane ({APISERVER_MANIFEST}) but {what}: removing a "
                "control plane is not supported yet (etcd members and kubeadm's control-plane "
                "list would be left half-changed)", host=h.name,
                hint=f"give {h.name} the control-plane role back in cluster.yaml")
    convertible = convertible_from(ctx)
    for h in running:
        f = ctx.facts[h.name]
        have = endpoint_facts(f).server
        if f.file(ADMIN_CONF) is not None and have is not None and have != want \
                and have != convertible:
            raise RefusedError(
                f"the running cluster's API endpoint is {have} ({h.name}: {ADMIN_CONF}) but "
                f"cluster.yaml wants {want}: homekube only moves a cluster with one control "
                f"plane from that control plane's own address to kubernetes.endpoint, not from "
                "one endpoint to another",
                host=h.name,
                hint="keep the endpoint the cluster was initialised with (kubernetes.endpoint / "
                     "controlPlaneEndpoint), or set it before the first apply")
    k8s = cfg.kubernetes
    if running and k8s.endpoint is None and k8s.control_plane_endpoint is None:
        joining = [h.name for h in cfg.control_planes
                   if h.name in ctx.facts and ctx.facts[h.name].file(APISERVER_MANIFEST) is None]
        if joining:
            raise RefusedError(
                f"{', '.join(joining)} would join as control planes of a running cluster whose "
                f"API endpoint is {running[0].name}'s own address: converting a 1-control-plane "
                "cluster to a highly available one is not supported yet",
                host=joining[0],
                hint="set kubernetes.endpoint (a virtual address) before the first apply of a "
                     "cluster that will have several control planes")


def old_servers(hosts: Sequence[HostSpec]) -> set[str]:
    """The URLs of `hosts`' own API servers (what a cluster without endpoint uses)."""
    out = set()
    for h in hosts:
        if h.ipv4:
            out.add(f"https://{h.ipv4}:{API_SERVER_PORT}")
        if h.ipv6:
            out.add(f"https://[{h.ipv6}]:{API_SERVER_PORT}")
    return out


def convertible_from(ctx: Context) -> str | None:
    """The API URL a running cluster may be moved away from to `kubernetes.endpoint`: its only
    running control plane's own address (https://<its address>:6443); None otherwise."""
    if ctx.config.kubernetes.endpoint is None:
        return None
    running = [h for h in [*ctx.hosts(), *ctx.removed]
               if h.name in ctx.facts and ctx.facts[h.name].file(APISERVER_MANIFEST) is not None]
    if len(running) != 1:
        return None
    have = endpoint_facts(ctx.facts[running[0].name]).server
    return have if have in old_servers(running) else None


def endpoint_status(cfg: ClusterConfig, facts: dict[str, HostFacts]) -> dict[str, object] | None:
    """`homekube status`'s endpoint section: which control plane holds the virtual address,
    and whether each control plane's API server answers, locally and through the address."""
    ep = cfg.kubernetes.endpoint
    if ep is None or not cfg.kubernetes.enabled:
        return None
    holders: list[str] = []
    rows: list[dict[str, object]] = []
    for h in cfg.control_planes:
        f = facts.get(h.name)
        if f is None:
            rows.append({"name": h.name, "reachable": False})
            continue
        holds = f.has_address(str(ep.address))
        if holds:
            holders.append(h.name)
        e = endpoint_facts(f)
        rows.append({"name": h.name, "reachable": True, "holds": holds,
                     "keepalived": f.unit(UNIT).active, "local": e.local, "viaEndpoint": e.via_vip})
    answers = [r["viaEndpoint"] == "ok" for r in rows if r.get("reachable")]
    return {"kind": ep.kind, "address": f"{ep.address}:{API_SERVER_PORT}",
            "holder": holders[0] if len(holders) == 1 else None, "holders": holders,
            "answers": bool(answers) and all(answers),
            "apiServersReady": all(r.get("local") == "ok" for r in rows),
            "controlPlanes": rows}
