"""Talk to etcd over mTLS from the operator machine (etcd's JSON gRPC gateway, /v3/...).

No etcd client library: the gateway speaks JSON over HTTPS, and the standard library's ssl
and http.client do that with client certificates. The operator's client certificate is
issued from the local CA (it never leaves the state directory).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from homekube.pki.issue import generate_key
from homekube.pki.spec import CertSpec, needs_issue
from homekube.pki.store import LocalCA, _write_atomic

OPERATOR = "homekube-operator"


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
    """A tiny client for the few gateway calls status/backup need."""

    def __init__(self, creds: ClientCreds, timeout: float = 3.0) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(creds.ca))
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
        ctx.check_hostname = True
        self.ctx = ctx
        self.timeout = timeout

    def call(self, host: str, path: str, body: dict[str, Any] | None = None, port: int = 2379) -> Any:
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

    def members(self, host: str) -> list[dict[str, Any]]:
        out = self.call(host, "/v3/cluster/member/list", {})
        return list(out.get("members", []))

    def status(self, host: str) -> dict[str, Any]:
        return dict(self.call(host, "/v3/maintenance/status", {}))

    def health(self, host: str) -> bool:
        try:
            out = self.call(host, "/health")
        except (OSError, ssl.SSLError, json.JSONDecodeError, http.client.HTTPException):
            return False
        return str(out.get("health")) == "true"

    def put(self, host: str, key: str, value: str) -> None:
        self.call(host, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def get(self, host: str, key: str) -> str | None:
        out = self.call(host, "/v3/kv/range", {"key": _b64(key)})
        kvs = out.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def temp_dir() -> str:
    return tempfile.mkdtemp(prefix="homekube-")
