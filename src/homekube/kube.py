"""The Kubernetes API from the operator's machine: lightkube through an SSH-forwarded port.

Only SSH has to be open between the operator and the cluster: :func:`forward_port` asks the
SSH connection to a control plane for a local listener (asyncssh ``forward_local_port``) whose
far end is ``127.0.0.1:6443`` on that host. The API server's certificate does not name
``127.0.0.1``, so requests carry the TLS server name ``kubernetes`` — a SAN kubeadm always puts
in the apiserver certificate — and the certificate is still verified against the cluster CA
from the admin kubeconfig.

What is here (all validated against a fake API in the unit tests, not against a cluster):

* :meth:`Kube.apply` — server-side apply, field manager ``homekube``, conflicts forced;
* :meth:`Kube.wait_deployment`, :meth:`Kube.wait_api` — polls
  with a timeout whose error says what is not ready and why (conditions, replica counts);
* :meth:`Kube.token` — a TokenRequest: a short-lived ServiceAccount token, never a Secret.

Errors become :class:`homekube.errors.HomekubeError` (API refusals, timeouts) or
:class:`homekube.errors.ConnectError` (the tunnel or TLS failed), so the CLI shows a message and
a hint, never a traceback.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig, codecs
from lightkube.config.client_adapter import verify_cluster
from lightkube.core.exceptions import LoadResourceError
from lightkube.generic_resource import create_global_resource
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Service, ServiceAccount
from ruamel.yaml import YAML

from homekube.errors import ConnectError, HomekubeError, UsageError
from homekube.transport._asyncssh import asyncssh
from homekube.transport.base import Transport

__all__ = [
    "API_PORT",
    "API_SERVER_NAME",
    "FIELD_MANAGER",
    "Kube",
    "api_client",
    "conditions",
    "deployment_progress",
    "forward_port",
    "open_api",
    "parse_kubeconfig",
]

FIELD_MANAGER = "homekube"
API_PORT = 6443
API_SERVER_NAME = "kubernetes"
"""Always a SAN of kubeadm's apiserver certificate (with kubernetes.default.svc…)."""

# Registering the operator's kinds is what lets `apply_objects` server-side-apply Calico's
# Installation and APIServer objects: lightkube resolves a manifest's kind through this registry.
create_global_resource("operator.tigera.io", "v1", "Installation", "installations")
create_global_resource("operator.tigera.io", "v1", "APIServer", "apiservers")


# ---------------------------------------------------------------------------------------------
# kubeconfig and client


def parse_kubeconfig(text: str) -> dict[str, Any]:
    """Read a kubeconfig; raise HomekubeError when it is not one."""
    try:
        data = YAML(typ="safe").load(text)
    except Exception as e:  # ruamel raises many types; all mean "not YAML"
        raise HomekubeError(f"the kubeconfig is not YAML: {e}") from None
    if not isinstance(data, dict) or not data.get("clusters") or not data.get("users"):
        raise HomekubeError("the kubeconfig has no clusters or users")
    return data


class _ServerName(httpx2.AsyncBaseTransport):
    """Check the server certificate for `name` whatever address the request goes to."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, name: str) -> None:
        self._inner = inner
        self._name = name

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.extensions = {**request.extensions, "sni_hostname": self._name}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def api_client(
    kubeconfig: Mapping[str, Any],
    *,
    server: str | None = None,
    server_name: str | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    timeout: float = 10.0,
) -> AsyncClient:
    """A lightkube client for the kubeconfig's current context, optionally at another address.

    ``server`` replaces the cluster's URL (the tunnel's local end); ``server_name`` is the name
    the certificate must carry there. ``transport`` replaces the network (tests).
    """
    data = copy.deepcopy(dict(kubeconfig))
    if server is not None:
        for c in data.get("clusters") or []:
            c.setdefault("cluster", {})["server"] = server
    single = KubeConfig.from_dict(data).get()
    if single is None:
        raise HomekubeError("the kubeconfig has no usable context")
    if single.user is None:
        raise HomekubeError("the kubeconfig's context has no user")
    if transport is None and server_name is not None:
        ctx = verify_cluster(single.cluster, single.user, single.abs_file, trust_env=False)
        transport = _ServerName(httpx2.AsyncHTTPTransport(verify=ctx), server_name)
    return AsyncClient(single, field_manager=FIELD_MANAGER, trust_env=False,
                       timeout=httpx2.Timeout(timeout), transport=transport)


# ---------------------------------------------------------------------------------------------
# the SSH tunnel


def _ssh_connection(t: Transport) -> asyncssh.SSHClientConnection:
    # SshTransport keeps its connection private; a public forwarding method on it would be
    # cleaner (proposed), this reaches for the connection without changing that module
    conn = getattr(t, "_conn", None)
    if not isinstance(conn, asyncssh.SSHClientConnection):
        raise UsageError(f"{t.host}: reaching the API needs an SSH connection to the host")
    return conn


@asynccontextmanager
async def forward_port(
    t: Transport, dest_host: str, dest_port: int, *, listen_port: int = 0
) -> AsyncIterator[int]:
    """Listen on 127.0.0.1 (port 0: any free one) and forward to dest through `t`'s SSH."""
    conn = _ssh_connection(t)
    try:
        listener = await conn.forward_local_port("127.0.0.1", listen_port, dest_host, dest_port)
    except OSError as e:
        raise ConnectError(f"cannot listen on 127.0.0.1:{listen_port}: {e}", host=t.host,
                           hint="choose another --port") from None
    except asyncssh.Error as e:
        raise ConnectError(f"SSH refused to forward to {dest_host}:{dest_port}: {e}",
                           host=t.host, hint="the server may forbid TCP forwarding "
                           "(AllowTcpForwarding in sshd_config)") from None
    try:
        yield listener.get_port()
    finally:
        listener.close()
        await listener.wait_closed()


@asynccontextmanager
async def open_api(
    t: Transport, admin_conf: str, *, request_seconds: float = 10.0
) -> AsyncIterator[Kube]:
    """The API of the control plane behind `t`, reached through an SSH-forwarded port."""
    kc = parse_kubeconfig(admin_conf)
    async with forward_port(t, "127.0.0.1", API_PORT) as port:
        client = api_client(kc, server=f"https://127.0.0.1:{port}", server_name=API_SERVER_NAME,
                            timeout=request_seconds)
        try:
            yield Kube(client, where=f"the API server on {t.host} (through SSH)")
        finally:
            await client.close()


# ---------------------------------------------------------------------------------------------
# readiness, as pure functions of an object's dict form


def conditions(obj: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """`status.conditions` by type: {"Available": {"status": "True", "reason": …}}."""
    out: dict[str, dict[str, str]] = {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and "type" in c:
            out[str(c["type"])] = {k: str(c.get(k, "")) for k in ("status", "reason", "message")}
    return out


def _cond_text(name: str, c: Mapping[str, str]) -> str:
    extra = ": ".join(x for x in (c.get("reason", ""), c.get("message", "")) if x)
    return f"{name}={c.get('status', '?')}" + (f" ({extra})" if extra else "")


def deployment_progress(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """(ready, what is not ready) for a Deployment, like `kubectl rollout status`."""
    meta = obj.get("metadata") or {}
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1) or 0)
    gen, seen = int(meta.get("generation", 0) or 0), int(st.get("observedGeneration", 0) or 0)
    updated = int(st.get("updatedReplicas", 0) or 0)
    available = int(st.get("availableReplicas", 0) or 0)
    conds = conditions(obj)
    if seen < gen:
        return False, "the controller has not seen the latest spec yet"
    progressing = conds.get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return False, _cond_text("Progressing", progressing)
    if updated < want or available < want:
        why = f"{available}/{want} replicas available, {updated}/{want} updated"
        if "Available" in conds:
            why += "; " + _cond_text("Available", conds["Available"])
        return False, why
    return True, f"{available}/{want} replicas available"


# ---------------------------------------------------------------------------------------------
# the client wrapper


class Kube:
    """A few API operations homekube needs, with errors a user can act on."""

    def __init__(self, client: AsyncClient, *, where: str = "the API server",
                 interval: float = 2.0) -> None:
        self.client = client
        self.where = where
        self.interval = interval

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await fn()
        except ApiError as e:
            status = e.status
            raise HomekubeError(f"{what}: {self.where} refused: {status.message} "
                                f"({status.reason}, {status.code})") from None
        except httpx2.HTTPError as e:
            raise ConnectError(f"{what}: cannot talk to {self.where}: {e or type(e).__name__}",
                               hint="is the control plane up? `homekube status` shows it") from None

    async def wait_api(self, seconds: float = 60.0) -> None:
        """Until the API answers (a GET of namespace default)."""
        last = "no answer yet"
        deadline = time.monotonic() + seconds
        while True:
            try:
                await self.client.get(Namespace, "default")
                return
            except ApiError as e:
                last = f"{e.status.code} {e.status.message}"
            except httpx2.HTTPError as e:
                last = str(e) or type(e).__name__
            if time.monotonic() >= deadline:
                raise HomekubeError(f"{self.where} did not answer within {seconds:.0f}s: {last}")
            await asyncio.sleep(self.interval)

    async def apply(self, objects: Sequence[Mapping[str, Any]]) -> list[str]:
        """Server-side apply each object in order (field manager homekube, force)."""
        done: list[str] = []
        for d in objects:
            name = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            try:
                obj = codecs.from_dict(dict(d))
            except LoadResourceError as e:
                raise HomekubeError(
                    f"cannot apply {name}: {e}",
                    hint="is its CRD installed? (Calico's CRDs come first)") from None

            async def one(obj: Any = obj) -> Any:
                return await self.client.apply(obj, field_manager=FIELD_MANAGER, force=True)

            await self._call(f"apply {name}", one)
            done.append(name)
        return done

    async def _wait(self, what: str, get: Callable[[], Awaitable[Any]],
                    progress: Callable[[Mapping[str, Any]], tuple[bool, str]],
                    seconds: float) -> None:
        deadline = time.monotonic() + seconds
        last = "not found yet"
        while True:
            try:
                obj = await get()
                ok, last = progress(obj.to_dict())
                if ok:
                    return
            except ApiError as e:
                if e.status.code != 404:
                    raise HomekubeError(
                        f"{what}: {self.where} refused: {e.status.message}") from None
                last = "not found yet"
            except httpx2.HTTPError as e:
                last = f"API not reachable ({e or type(e).__name__})"
            if time.monotonic() >= deadline:
                raise HomekubeError(f"{what} is not ready after {seconds:.0f}s: {last}")
            await asyncio.sleep(self.interval)

    async def wait_deployment(self, namespace: str, name: str, seconds: float = 300.0) -> None:
        await self._wait(f"deployment {namespace}/{name}",
                         lambda: self.client.get(Deployment, name, namespace=namespace),
                         deployment_progress, seconds)

    async def token(self, namespace: str, service_account: str, seconds: int) -> str:
        """A TokenRequest: a token bound to nothing but time; no Secret is created."""
        req = ServiceAccount.Token(metadata=ObjectMeta(),
                                  spec=TokenRequestSpec(audiences=[], expirationSeconds=seconds))
        res = await self._call(
            f"create a token for {namespace}/{service_account}",
            lambda: self.client.create(req, service_account, namespace=namespace))
        token = getattr(getattr(res, "status", None), "token", None)
        if not isinstance(token, str) or not token:
            raise HomekubeError(f"{self.where} returned no token for {namespace}/{service_account}")
        return token

    async def cluster_ip(self, namespace: str, service: str) -> str:
        svc = await self._call(f"read service {namespace}/{service}",
                               lambda: self.client.get(Service, service, namespace=namespace))
        ip = getattr(getattr(svc, "spec", None), "clusterIP", None)
        if not isinstance(ip, str) or not ip or ip == "None":
            raise HomekubeError(f"service {namespace}/{service} has no cluster IP")
        return ip
