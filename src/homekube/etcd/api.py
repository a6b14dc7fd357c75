"""What homekube asks etcd, as data, and one pure parser per answer.

Each :class:`Request` names the JSON-gateway call (what the operator's HTTPS client and `curl`
on a host send) and the `etcdctl -w json` command that answers the same question on a host
without curl. The two spell the answer differently: the gateway writes 64-bit integers as
strings and leaves empty fields out; etcdctl writes numbers and wraps `endpoint status` per
endpoint. Each parser reads both, and returns None for anything that is not an answer (an
error body, an empty reply, HTML from a proxy).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class EtcdMember:
    id: int
    name: str  # empty for a member that was added but never started
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"


@dataclass(frozen=True)
class EtcdStatus:
    version: str
    db_size: int
    raft_index: int
    leader: int
    member_id: int
    learner: bool


@dataclass(frozen=True)
class SnapshotStatus:
    """`etcdutl snapshot status -w json`: totalKey counts every stored revision of every key."""

    hash: int
    revision: int
    total_keys: int


@dataclass(frozen=True)
class Request(Generic[T]):
    path: str
    body: dict[str, Any] | None  # None: a GET
    etcdctl: str  # the etcdctl arguments giving the same answer as JSON ("" when there are none)
    parse: Callable[[Any], T]


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def parse_member_list(data: Any) -> list[EtcdMember] | None:
    if not isinstance(data, dict) or "members" not in data:
        return None
    return [
        EtcdMember(
            id=_int(m.get("ID")), name=str(m.get("name", "")),
            peer_urls=tuple(m.get("peerURLs") or ()), client_urls=tuple(m.get("clientURLs") or ()),
            learner=bool(m.get("isLearner", False)),
        )
        for m in data.get("members") or [] if isinstance(m, dict)
    ]


def parse_status(data: Any) -> EtcdStatus | None:
    # etcdctl wraps it: [{"Endpoint": ..., "Status": {...}}]; the gateway answers {...}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0].get("Status", data[0])
    if not isinstance(data, dict) or "version" not in data:
        return None
    header = data.get("header")
    header = header if isinstance(header, dict) else {}
    return EtcdStatus(
        version=str(data["version"]), db_size=_int(data.get("dbSize")),
        raft_index=_int(data.get("raftIndex")), leader=_int(data.get("leader")),
        member_id=_int(header.get("member_id")), learner=bool(data.get("isLearner", False)),
    )


def parse_health(data: Any) -> bool:
    return isinstance(data, dict) and str(data.get("health")) == "true"


def parse_range_value(data: Any) -> str | None:
    kvs = data.get("kvs") if isinstance(data, dict) else None
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def parse_none(data: Any) -> None:
    return None


def parse_snapshot_status(data: Any) -> SnapshotStatus | None:
    try:
        return SnapshotStatus(int(data["hash"]), int(data["revision"]), int(data["totalKey"]))
    except (KeyError, TypeError, ValueError):
        return None


def parse_json(text: str) -> Any:
    """The JSON in one line of output, or None when there is none."""
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None


def parse_fields(text: str) -> dict[str, str]:
    """`etcdctl -w fields` output: `"Key" : value` per line, string values quoted."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(" : ")
        if sep and k.startswith('"'):
            out[k.strip('"')] = v.strip().strip('"')
    return out


def parse_version(text: str) -> str:
    """The version in `etcd --version` output ("" when it is not there)."""
    for line in text.splitlines():
        if "etcd Version:" in line:
            return line.split(":", 1)[1].strip()
    return ""


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


MEMBER_LIST = Request("/v3/cluster/member/list", {}, "member list -w json", parse_member_list)
STATUS = Request("/v3/maintenance/status", {}, "endpoint status -w json", parse_status)
HEALTH = Request("/health", None, "", parse_health)


def kv_put(key: str, value: str) -> Request[None]:
    return Request("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, "", parse_none)


def kv_get(key: str) -> Request[str | None]:
    return Request("/v3/kv/range", {"key": _b64(key)}, "", parse_range_value)
