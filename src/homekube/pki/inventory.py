"""Every certificate a cluster depends on, with days left, and the warnings `status` shows (pure).

Sources, all public material (a private key never leaves its host):

* kubeadm's tree on a control plane, the files `kubeadm certs check-expiration` reads:
  ``ca``, ``front-proxy-ca`` (CAs, 10 years, not renewed by kubeadm) and the leaves
  ``apiserver``, ``apiserver-kubelet-client``, ``front-proxy-client``;
* the client certificates embedded in kubeadm's kubeconfigs (``admin.conf``,
  ``super-admin.conf``, ``controller-manager.conf``, ``scheduler.conf``), cut out of the file
  on the host so the key stays there;
* the kubelet's client certificate (``kubelet-client-current.pem``, rotated by the kubelet
  itself) and its serving certificate (self-signed ``kubelet.crt``, or
  ``kubelet-server-current.pem`` with serving-certificate bootstrap);
* the external etcd's certificates (:mod:`homekube.ops.certs` lists them);
* every admin kubeconfig `homekube kubeconfig` wrote, recorded in the state directory when
  written (:func:`handed_out_entry`).

`warnings` turns rows into one line each for whatever expires within the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homekube.pki.spec import cert_info

#: kubeadm's leaf certificates on a control plane: `kubeadm certs renew all` re-issues these
KUBEADM_LEAVES = ("apiserver", "apiserver-kubelet-client", "front-proxy-client")
#: kubeadm's kubeconfigs with an embedded client certificate (renewed by `certs renew all`)
KUBEADM_KUBECONFIGS = ("admin.conf", "super-admin.conf", "controller-manager.conf",
                       "scheduler.conf")
#: the kubelet's certificates (the kubelet rotates its client certificate itself; `certs renew`
#: replaces its self-signed serving certificate)
KUBELET_CERTS = ("kubelet-client", "kubelet-serving")


@dataclass(frozen=True)
class Expiry:
    """One certificate's lifetime as `certs` and `status` show it."""

    host: str
    name: str  # kubeadm's name (apiserver, admin.conf), etcd/server, kubelet-client, ...
    path: str
    cn: str
    not_after: datetime
    days_left: int
    #: kubeadm (renewed by `kubeadm certs renew`), etcd, kubelet, ca, kubeconfig (handed out)
    group: str
    serial: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "name": self.name, "path": self.path, "cn": self.cn,
                "notAfter": self.not_after.isoformat(), "daysLeft": self.days_left,
                "group": self.group, "serial": self.serial}


def expiry(host: str, name: str, path: str, pem: bytes, now: datetime, group: str) -> Expiry:
    """Summarise one PEM certificate; raises ValueError when it does not parse."""
    info = cert_info(pem)
    return Expiry(host, name, path, info.subject_cn, info.not_after, info.days_left(now), group,
                  info.serial_hex)


def parse_pem_sections(text: str) -> dict[str, bytes]:
    """`@@name` lines, each followed by a PEM certificate -> {name: the first certificate}."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    pems: dict[str, bytes] = {}
    for name, lines in out.items():
        body = "\n".join(lines)
        begin = body.find("-----BEGIN CERTIFICATE-----")
        end_marker = "-----END CERTIFICATE-----"
        end = body.find(end_marker, begin)
        if begin >= 0 and end > begin:
            pems[name] = (body[begin:end + len(end_marker)] + "\n").encode()
    return pems


def group_of(name: str) -> str:
    if name in ("ca", "front-proxy-ca", "etcd/ca") or name.endswith("/ca.crt"):
        return "ca"
    if name in KUBEADM_LEAVES or name in KUBEADM_KUBECONFIGS:
        return "kubeadm"
    if name in KUBELET_CERTS:
        return "kubelet"
    return "etcd"


def kubeadm_due(rows: Iterable[Expiry], window_days: int) -> list[Expiry]:
    """The kubeadm-renewable certificates expiring within the window (renew's trigger)."""
    return [r for r in rows if r.group == "kubeadm" and r.days_left < window_days]


def warnings(rows: Iterable[Expiry], window_days: int) -> list[str]:
    """One line per certificate expiring within `window_days` (or already expired)."""
    out = []
    for r in sorted(rows, key=lambda r: (r.days_left, r.host, r.name)):
        if r.days_left >= window_days:
            continue
        when = ("has EXPIRED" if r.days_left < 0 else
                f"expires in {r.days_left} day{'s' if r.days_left != 1 else ''}")
        fix = {"kubeadm": "homekube certs renew", "etcd": "homekube certs renew",
               "kubelet": "the kubelet rotates it; check `journalctl -u kubelet`",
               "kubeconfig": "homekube kubeconfig (after certs renew)",
               "ca": "CA rotation: see `homekube certs --help`"}.get(r.group, "")
        if r.name == "kubelet-serving":
            fix = "homekube certs renew"
        out.append(f"{r.host}: certificate {r.name} {when} "
                   f"({r.not_after:%Y-%m-%d %H:%M} UTC){f'; {fix}' if fix else ''}")
    return out


# ---------------------------------------------------------------------------------------------
# the kubeconfigs `homekube kubeconfig` handed out


def handed_out_entry(path: str, context: str, pem: bytes, now: datetime) -> dict[str, Any]:
    """What the state directory records about one written kubeconfig (no key material)."""
    info = cert_info(pem)
    return {"path": path, "context": context, "cn": info.subject_cn,
            "notAfter": info.not_after.isoformat(), "serial": info.serial_hex,
            "writtenAt": now.isoformat(timespec="seconds")}


def record_handed_out(records: Sequence[Mapping[str, Any]], entry: Mapping[str, Any]
                      ) -> list[dict[str, Any]]:
    """The records with `entry` in place of an older one for the same path and context."""
    kept = [dict(r) for r in records
            if (r.get("path"), r.get("context")) != (entry["path"], entry["context"])]
    return [*kept, dict(entry)]


def handed_out_rows(records: Iterable[Mapping[str, Any]], now: datetime) -> list[Expiry]:
    rows = []
    for r in records:
        try:
            na = datetime.fromisoformat(str(r["notAfter"]))
        except (KeyError, ValueError):
            continue
        days = (na - now).days
        rows.append(Expiry("(local)", f"kubeconfig {r.get('context', '?')}", str(r.get("path")),
                           str(r.get("cn", "")), na, days, "kubeconfig", str(r.get("serial", ""))))
    return rows


# ---------------------------------------------------------------------------------------------
# merging into ~/.kube/config


def merge_kubeconfig(existing: Mapping[str, Any] | None, new: Mapping[str, Any], name: str,
                     *, make_current: bool) -> dict[str, Any]:
    """`existing` with `new`'s only cluster, user and context added under `name` (replacing
    entries of the same names; every other entry is kept as it was)."""
    base: dict[str, Any] = dict(existing or {})
    base.setdefault("apiVersion", "v1")
    base.setdefault("kind", "Config")
    user_name = f"{name}-admin"
    cl = (new.get("clusters") or [{}])[0].get("cluster") or {}
    us = (new.get("users") or [{}])[0].get("user") or {}
    for key, item in (("clusters", {"name": name, "cluster": cl}),
                      ("users", {"name": user_name, "user": us}),
                      ("contexts", {"name": name, "context": {"cluster": name, "user": user_name}})):
        items = [i for i in (base.get(key) or []) if not (isinstance(i, dict) and i.get("name") == item["name"])]
        base[key] = [*items, item]
    if make_current or not base.get("current-context"):
        base["current-context"] = name
    base.setdefault("preferences", {})
    return base
