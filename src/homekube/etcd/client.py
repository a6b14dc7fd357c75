"""Talk to etcd over mTLS from the operator machine (etcd's JSON gRPC gateway, /v3/...).

The thin operator-side shell around :mod:`homekube.etcd.api`: it sends a Request and hands
the decoded JSON to the Request's parser. No etcd client library: the gateway speaks JSON over
HTTPS, and the standard library's ssl and http.client do that with client certificates. The
operator's client certificate is issued from the local CA (it never leaves the state directory).
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from homekube.etcd import api
from homekube.etcd.layout import CLIENT_PORT
from homekube.pki.issue import generate_key
from homekube.pki.spec import CertSpec, needs_issue
from homekube.pki.store import LocalCA, _write_atomic

OPERATOR = "homekube-operator"
T = TypeVar("T")


def operator_spec() -> CertSpec:
    return CertSpec(name="operator", common_name=OPERATOR, client_auth=True,
                    validity=timedelta(days=90), issuer="etcd/ca")


@dataclass(frozen=True)
class ClientCreds:
    ca: Path
    cert: Path
    key: Path


def operator_creds(state_dir: Path, ca: LocalCA) -> ClientCreds:
    """The operator's etcd client certificate, (re)issued locally when missing or expiring."""
    d = LocalCA.directory_for(state_dir)
    cert, key = d / "operator.crt", d / "operator.key"
    now = datetime.now(UTC)
    existing = cert.read_bytes() if cert.is_file() and key.is_file() else None
    need, _ = needs_issue(operator_spec(), existing, ca.cert_pem, now, timedelta(days=30))
    if need:
        k = generate_key("ecdsa-p256")
        _write_atomic(key, k, 0o600)
        _write_atomic(cert, ca.issue(operator_spec(), k, now), 0o644)
    return ClientCreds(ca.cert_path, cert, key)


class EtcdHttp:
    """Send :mod:`homekube.etcd.api` requests to a member's gateway."""

    def __init__(self, creds: ClientCreds, timeout: float = 3.0) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(creds.ca))
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
        ctx.check_hostname = True
        self.ctx = ctx
        self.timeout = timeout

    def raw(self, host: str, path: str, body: dict[str, Any] | None = None,
            port: int = CLIENT_PORT) -> Any:
        h = host.strip("[]")
        conn = http.client.HTTPSConnection(h, port, timeout=self.timeout, context=self.ctx)
        try:
            data = json.dumps(body or {}).encode()
            conn.request("POST" if body is not None else "GET", path, body=data if body is not None else None,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}: {raw[:200]!r}")
            return json.loads(raw)
        finally:
            conn.close()

    def send(self, host: str, req: api.Request[T]) -> T:
        return req.parse(self.raw(host, req.path, req.body))

    def members(self, host: str) -> list[api.EtcdMember]:
        out = self.send(host, api.MEMBER_LIST)
        if out is None:
            raise ValueError(f"{host}: the member list answer has no members")
        return out

    def status(self, host: str) -> api.EtcdStatus:
        out = self.send(host, api.STATUS)
        if out is None:
            raise ValueError(f"{host}: the status answer has no version")
        return out

    def health(self, host: str) -> bool:
        try:
            return self.send(host, api.HEALTH)
        except (OSError, ssl.SSLError, json.JSONDecodeError, http.client.HTTPException):
            return False

    def put(self, host: str, key: str, value: str) -> None:
        self.send(host, api.kv_put(key, value))

    def get(self, host: str, key: str) -> str | None:
        return self.send(host, api.kv_get(key))
