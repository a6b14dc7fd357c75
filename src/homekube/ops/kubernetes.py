"""Operator-side Kubernetes helpers: the admin kubeconfig, the web UI, a status section, and the
cluster objects `homekube render` writes.

The kubeconfig and the UI reach the cluster through SSH only: the admin kubeconfig is read
over SSH from the first control plane that has one, and `homekube ui` forwards a local port
through the same SSH connection (see :mod:`homekube.kube`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from ruamel.yaml import YAML

from homekube.components.kubernetes import (
    ADMIN_CONF,
    KUBELET_CONF,
    calico_artifacts,
    cluster_files,
    is_node,
    kube_facts,
)
from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import HomekubeError, UsageError
from homekube.executor import write_local
from homekube.facts.host import HostFacts
from homekube.kube import forward_port, open_api, parse_kubeconfig
from homekube.ops.session import ssh_target, state_path
from homekube.pki.inventory import handed_out_entry, merge_kubeconfig, record_handed_out
from homekube.pki.spec import cert_info
from homekube.plan.model import LocalWrite
from homekube.render.kubernetes import HEADLAMP_NAMESPACE, control_plane_endpoint
from homekube.render.yamlout import dump
from homekube.transport.base import Transport
from homekube.transport.ssh import SshTransport

__all__ = [
    "default_kubeconfig_path",
    "fetch_admin_conf",
    "kubernetes_status",
    "operator_kubeconfig",
    "print_kubernetes_status",
    "run_kubeconfig",
    "run_ui",
    "write_cluster_objects",
]


# ---------------------------------------------------------------------------------------------
# the admin kubeconfig


async def fetch_admin_conf(cfg: ClusterConfig) -> tuple[Transport, HostSpec, str]:
    """Connect to the control planes in order; return the first with an admin kubeconfig.

    The caller closes the returned transport. The kubeconfig holds the cluster-admin key: it
    stays in memory here and is never logged.
    """
    if not cfg.kubernetes.enabled:
        raise UsageError("the Kubernetes layer is off in cluster.yaml (kubernetes.enabled)")
    if not cfg.control_planes:
        raise UsageError("cluster.yaml has no control-plane host")
    problems: list[str] = []
    for h in cfg.control_planes:
        try:
            t: Transport = await SshTransport.connect(ssh_target(cfg, h))
        except HomekubeError as e:
            problems.append(str(e))
            continue
        res = await t.run(f"cat {ADMIN_CONF}", timeout=30)
        if res.ok and res.stdout.strip():
            return t, h, res.stdout
        await t.close()
        problems.append(f"{h.name}: no {ADMIN_CONF}")
    raise HomekubeError("no control plane has an admin kubeconfig: " + "; ".join(problems),
                        hint="run `homekube apply` first (kubeadm init writes it)")


def _named(items: Any, name: str | None, what: str) -> dict[str, Any]:
    for it in items or []:
        if isinstance(it, dict) and (name is None or it.get("name") == name):
            return it
    raise HomekubeError(f"the admin kubeconfig has no {what} {name!r}")


def operator_kubeconfig(admin_conf: str, cfg: ClusterConfig, *, server: str,
                        tls_server_name: str | None = None) -> str:
    """The admin kubeconfig renamed after the cluster and pointed at `server`."""
    kc = parse_kubeconfig(admin_conf)
    ctx_name = kc.get("current-context")
    ctx = _named(kc.get("contexts"), ctx_name, "context").get("context") or {}
    cluster = _named(kc.get("clusters"), ctx.get("cluster"), "cluster").get("cluster") or {}
    user = _named(kc.get("users"), ctx.get("user"), "user").get("user") or {}
    for key in ("client-certificate-data", "client-key-data"):
        if not user.get(key):
            raise HomekubeError(f"the admin kubeconfig's user has no {key}")
    if not cluster.get("certificate-authority-data"):
        raise HomekubeError("the admin kubeconfig has no certificate-authority-data")
    cl: dict[str, Any] = {"server": server,
                          "certificate-authority-data": cluster["certificate-authority-data"]}
    if tls_server_name:
        cl["tls-server-name"] = tls_server_name
    admin = f"{cfg.name}-admin"
    out = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cfg.name, "cluster": cl}],
        "users": [{"name": admin, "user": {
            "client-certificate-data": user["client-certificate-data"],
            "client-key-data": user["client-key-data"]}}],
        "contexts": [{"name": cfg.name, "context": {"cluster": cfg.name, "user": admin}}],
        "current-context": cfg.name,
    }
    return (f"# cluster-admin of {cfg.name}, written by `homekube kubeconfig`; keep it private.\n"
            + dump(out))


def default_kubeconfig_path(cfg: ClusterConfig) -> Path:
    return state_path(cfg) / "kubeconfig"


def default_merge_path() -> Path:
    return Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config")


def client_cert_pem(kubeconfig_text: str) -> bytes:
    """The (public) client certificate of a kubeconfig's first user."""
    kc = parse_kubeconfig(kubeconfig_text)
    user = (kc.get("users") or [{}])[0].get("user") or {}
    return base64.b64decode(user.get("client-certificate-data", ""))


def _record(cfg: ClusterConfig, path: Path, context: str, pem: bytes) -> None:
    """Note the written kubeconfig in the state directory (for `certs` and `status`)."""
    from homekube.ops.certs import handed_out, handed_out_path

    entry = handed_out_entry(str(path), context, pem, datetime.now(UTC))
    data = {"kubeconfigs": record_handed_out(handed_out(cfg), entry)}
    write_local(LocalWrite(str(handed_out_path(cfg)), (json.dumps(data, indent=2) + "\n").encode(),
                           0o600))


async def run_kubeconfig(cfg: ClusterConfig, console: Console, *, out: Path | None = None,
                         server: str | None = None, merge: Path | None = None,
                         context: str | None = None) -> int:
    """`homekube kubeconfig`: fetch, rename, point at a reachable address, write 0600 (or merge
    into an existing kubeconfig under a named context, keeping a copy of the old file); record
    what was handed out and say when its credential expires."""
    t, h, text = await fetch_admin_conf(cfg)
    await t.close()
    url = server or f"https://{control_plane_endpoint(cfg)}"
    content = operator_kubeconfig(text, cfg, server=url)
    pem = client_cert_pem(content)
    info = cert_info(pem)
    if merge is not None:
        name = context or cfg.name
        path = merge.expanduser()
        existing: dict[str, Any] | None = None
        backup: Path | None = None
        if path.exists():
            old = path.read_text()
            try:
                loaded = YAML(typ="safe").load(old)
            except Exception as e:  # ruamel raises many types; all mean "not YAML"
                raise UsageError(f"{path} is not YAML ({e}); not merging into it") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise UsageError(f"{path} is not a kubeconfig; not merging into it")
            existing = loaded
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            backup = path.with_name(f"{path.name}.homekube-{stamp}.bak")
            write_local(LocalWrite(str(backup), old.encode(), 0o600))
        merged = merge_kubeconfig(existing, parse_kubeconfig(content), name,
                                  make_current=existing is None)
        write_local(LocalWrite(str(path), dump(merged).encode(), 0o600))
        console.print(f"merged context {escape(name)} into {escape(str(path))} (0600) from "
                      f"{escape(h.name)}; server {escape(url)}")
        if backup is not None:
            console.print(f"  the previous file is kept as {escape(str(backup))}")
        console.print(f"  kubectl --context {escape(name)} get nodes")
    else:
        name = cfg.name
        path = (out or default_kubeconfig_path(cfg)).expanduser()
        write_local(LocalWrite(str(path), content.encode(), 0o600))
        console.print(f"wrote {escape(str(path))} (0600) from {escape(h.name)}; server {escape(url)}")
        console.print(f"  KUBECONFIG={escape(str(path))} kubectl get nodes")
        console.print("  (if that address is not reachable from here, `homekube ui` and --server "
                      "with an SSH tunnel work through SSH only)")
    _record(cfg, path, name, pem)
    days = info.days_left(datetime.now(UTC))
    console.print(f"  the credential ({escape(info.subject_cn)}) expires "
                  f"{info.not_after:%Y-%m-%d %H:%M} UTC, in {days} days; after "
                  "`homekube certs renew`, run this again")
    return 0


# ---------------------------------------------------------------------------------------------
# the web UI


async def run_ui(cfg: ClusterConfig, console: Console, *, port: int = 4466,
                 token_only: bool = False, wait_seconds: float = 300.0) -> int:
    """`homekube ui`: wait for Headlamp, mint a short-lived token, forward a local port.

    With `ui.kind: token` there is no in-cluster UI: print the API server and a token of the
    UI's account, for Headlamp desktop or `kubectl --token`.
    """
    if cfg.ui.kind == "none":
        raise UsageError("ui.kind is none in cluster.yaml")
    t, h, text = await fetch_admin_conf(cfg)
    try:
        async with open_api(t, text) as kube:
            await kube.wait_api(30)
            if cfg.ui.kind == "headlamp":
                await kube.wait_deployment(HEADLAMP_NAMESPACE, "headlamp", seconds=wait_seconds)
            token = await kube.token(HEADLAMP_NAMESPACE, "headlamp", cfg.ui.token_hours * 3600)
            ip = (await kube.cluster_ip(HEADLAMP_NAMESPACE, "headlamp")
                  if cfg.ui.kind == "headlamp" else None)
        role = "cluster-admin" if cfg.ui.access == "admin" else "view (read-only)"
        if token_only:
            print(token)  # the token alone on stdout, for scripts
            return 0
        if ip is None:
            console.print(f"API server: https://{escape(control_plane_endpoint(cfg))}  "
                          "(ui.kind is token: no in-cluster UI)")
            console.print(f"token ({role}, valid {cfg.ui.token_hours} h):")
            console.print(token, markup=False, soft_wrap=True)
            return 0
        async with forward_port(t, ip, 80, listen_port=port) as local:
            console.print(f"Headlamp: http://127.0.0.1:{local}/  (through SSH to {escape(h.name)};"
                          " Ctrl-C closes it)")
            console.print(f"login token ({role}, valid {cfg.ui.token_hours} h):")
            console.print(token, markup=False, soft_wrap=True)
            await asyncio.Event().wait()
    finally:
        await t.close()
    return 0


# ---------------------------------------------------------------------------------------------
# `homekube status`


def kubernetes_status(cfg: ClusterConfig, facts: Mapping[str, HostFacts]) -> dict[str, Any]:
    """The Kubernetes section of `homekube status`, from the facts already gathered."""
    if not cfg.kubernetes.enabled:
        return {"enabled": False}
    hosts: list[dict[str, Any]] = []
    api: dict[str, Any] = {}
    for h in cfg.hosts:
        if not is_node(h):
            continue
        f = facts.get(h.name)
        if f is None:
            hosts.append({"name": h.name, "reachable": False})
            continue
        kf = kube_facts(f)
        row: dict[str, Any] = {
            "name": h.name, "reachable": True, "kubeadm": kf.kubeadm,
            "runtime": cfg.kubernetes.runtime,
            "runtimeUnit": f.unit("crio.service" if cfg.kubernetes.runtime == "cri-o"
                                  else "containerd.service").active,
            "kubelet": f.unit("kubelet.service").active,
            "joined": f.file(KUBELET_CONF) is not None,
        }
        if h.has("control-plane"):
            row["api"] = kf.readyz
            if kf.api_ok and not api:
                api = {"via": h.name, "nodes": sorted(kf.nodes),
                       "nodeReady": dict(sorted(kf.node_ready.items())),
                       "calicoAvailable": kf.calico_available, "headlamp": kf.headlamp}
        hosts.append(row)
    return {"enabled": True, "version": cfg.kubernetes.version, "hosts": hosts, "api": api}


def print_kubernetes_status(console: Console, data: Mapping[str, Any] | None) -> None:
    if not data or not data.get("enabled"):
        console.print("kubernetes: off in cluster.yaml")
        return
    t = Table("host", "kubeadm", "runtime", "kubelet", "joined", "API /readyz", box=None,
              title=f"kubernetes {data.get('version')}")
    for r in data.get("hosts", []):
        if not r.get("reachable"):
            t.add_row(r["name"], "UNREACHABLE", "", "", "", "")
            continue
        t.add_row(r["name"], r.get("kubeadm") or "-",
                  f"{r.get('runtime', '')} {r.get('runtimeUnit', '')}", r.get("kubelet", ""),
                  "yes" if r.get("joined") else "no", escape(str(r.get("api") or "")))
    console.print(t)
    api = data.get("api") or {}
    if not api:
        console.print("kubernetes API: not answering (or not initialised yet)")
        return
    calico = {True: "Available", False: "not Available", None: "not installed"}[
        api.get("calicoAvailable")]
    ready = api.get("nodeReady") or {}
    nodes = " ".join(n if ready.get(n) == "True" else f"{n} (NotReady)"
                     for n in api.get("nodes", []))
    console.print(f"kubernetes API ready (asked on {escape(api['via'])}); nodes: "
                  f"{escape(nodes or '-')}; Calico: {calico}; "
                  f"Headlamp: {'deployed' if api.get('headlamp') else 'not deployed'}")


# ---------------------------------------------------------------------------------------------
# `homekube render`


def write_cluster_objects(cfg: ClusterConfig, out: Path) -> int:
    """Write DIR/cluster/: the objects applied through the API and the manifests' URLs."""
    if not cfg.kubernetes.enabled:
        return 0
    d = out / "cluster"
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    for path, content in cluster_files(cfg):
        (d / Path(path).name).write_bytes(content)
        n += 1
    arts, sums = calico_artifacts(cfg)
    lines = [f"{a.url}" + (f"  sha256:{a.sha256}" if a.sha256 else "") for a in arts]
    if sums:
        lines.append(f"{sums}  (the mirror's SHA256SUMS pins the files above)")
    (d / "calico-manifests.txt").write_text(
        "# Applied in this order (server-side), before calico-installation.yaml\n"
        + "\n".join(lines) + "\n")
    return n + 1
