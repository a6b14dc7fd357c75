"""Say what each etcd certificate must contain, where it lives, and whether it must be reissued.

Everything here is pure: no file or network access and no clock reads. ``now`` is always an
argument, so ``plan`` can be tested with any date and two runs with the same inputs agree.

The subjects, usages, SANs and validity follow kubeadm's certificate list (facts.md §6.1), so a
cluster built by homekube looks to kubeadm, etcdctl and humans exactly like one whose etcd
certificates came from ``kubeadm init phase certs etcd-*``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homekube.etcd import layout

__all__ = [
    "CA_VALIDITY",
    "ETCD_PKI",
    "KUBEADM_PKI",
    "LEAF_VALIDITY",
    "CertInfo",
    "CertSpec",
    "FileKind",
    "KeyType",
    "PkiDir",
    "PkiFile",
    "apiserver_etcd_client_spec",
    "cert_info",
    "classify_san",
    "etcd_ca_spec",
    "etcd_member_specs",
    "etcd_peer_spec",
    "etcd_server_spec",
    "healthcheck_client_spec",
    "member_dirs",
    "member_files",
    "needs_issue",
]

KeyType = Literal["ecdsa-p256", "rsa-2048"]
"""Key algorithms we issue; the two kubeadm choices worth having on a home cluster."""

FileKind = Literal["cert", "key"]

#: kubeadm's certificatesDir (its etcd files live in etcd/), and the copies the etcd user can
#: read (kubeadm's keys are root-only, facts.md §4.4): both are etcd's layout
KUBEADM_PKI = layout.KUBEADM_PKI
ETCD_PKI = layout.PKI_DIR

CA_VALIDITY = timedelta(days=3650)
"""kubeadm's 87600h."""

LEAF_VALIDITY = timedelta(days=365)
"""kubeadm's 8760h."""

# kubeadm's certlist.go puts O=system:masters on both etcd client certs; at least one newer
# excerpt omits it (facts.md §6.1, UNCONFIRMED). We keep it: etcd only reads O when etcd auth is
# enabled, which homekube never turns on, so it is harmless and matches the documented table.
_SYSTEM_MASTERS = ("system:masters",)

SERVER_AUTH = "serverAuth"
CLIENT_AUTH = "clientAuth"

_EKU_NAMES: dict[x509.ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH: CLIENT_AUTH,
}

# RFC 1123 labels; a leading "*." is allowed because an extra SAN may legitimately be a wildcard.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")


# --------------------------------------------------------------------------------------------
# Names and addresses
# --------------------------------------------------------------------------------------------


def _normalise_ip(value: str) -> str:
    """Return the canonical text of an IP so that SAN sets compare by value, not by spelling."""
    ip = ipaddress.ip_address(value.strip())
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        # A zone index ("%eth0") is local to one host and cannot be encoded in a certificate.
        raise ValueError(f"IPv6 address {value!r} has a zone index; a certificate cannot hold it")
    return str(ip)


def _normalise_dns(value: str) -> str:
    """Lower-case a DNS name and drop a trailing dot; DNS compares case-insensitively."""
    name = value.strip().rstrip(".").lower()
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise ValueError(f"{value!r} is neither an IP address nor a valid DNS name")
    return name


def classify_san(value: str) -> tuple[Literal["ip", "dns"], str]:
    """Decide whether an extra SAN is an IP or a DNS name, and return it normalised.

    cluster.yaml takes one flat list of extra names, like kubeadm's ``serverCertSANs``; a value
    that parses as an IP address is an IP SAN (clients dialling by IP check those, not DNS SANs).
    """
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        return "dns", _normalise_dns(value)
    return "ip", _normalise_ip(value)


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    """Drop repeats but keep first-seen order, so rendered certs list defaults first."""
    return tuple(dict.fromkeys(values))


# --------------------------------------------------------------------------------------------
# Certificate specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertSpec:
    """What one certificate must say; both issuing and the reissue decision read only this.

    IPs and DNS names are normalised on construction, so two specs built from differently
    spelled but equal inputs compare equal and SAN diffs never report spelling differences.
    """

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    is_ca: bool = False
    server_auth: bool = False
    client_auth: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    validity: timedelta = LEAF_VALIDITY
    issuer: str | None = None

    def __post_init__(self) -> None:
        if not self.common_name:
            raise ValueError(f"{self.name}: common name must not be empty")
        if len(self.common_name) > 64:
            # RFC 5280's ub-common-name; node names are DNS labels (≤ 63), so only a caller's bug gets here
            raise ValueError(f"{self.name}: common name {self.common_name!r} is longer than 64 characters")
        if self.validity <= timedelta(0):
            raise ValueError(f"{self.name}: validity must be positive, got {self.validity}")
        if self.is_ca and self.issuer is not None:
            # Intermediates would need path-length and chain handling nobody here wants.
            raise ValueError(f"{self.name}: only self-signed CAs are supported")
        if not self.is_ca and self.issuer is None:
            raise ValueError(f"{self.name}: a leaf certificate needs an issuer")
        if self.is_ca and (self.dns_names or self.ip_addresses):
            raise ValueError(f"{self.name}: a CA carries no SANs")
        if not self.is_ca and not (self.server_auth or self.client_auth):
            raise ValueError(f"{self.name}: a leaf needs serverAuth and/or clientAuth")
        object.__setattr__(self, "dns_names", _unique(_normalise_dns(n) for n in self.dns_names))
        object.__setattr__(
            self, "ip_addresses", _unique(_normalise_ip(ip) for ip in self.ip_addresses)
        )

    @property
    def ext_key_usages(self) -> tuple[str, ...]:
        """Extended key usages by their OpenSSL short names, in a fixed order."""
        usages: list[str] = []
        if self.server_auth:
            usages.append(SERVER_AUTH)
        if self.client_auth:
            usages.append(CLIENT_AUTH)
        return tuple(usages)

    @property
    def sans(self) -> frozenset[str]:
        """SANs as ``DNS:x`` / ``IP:y`` strings: the form diffs and messages use."""
        return frozenset(
            [f"DNS:{n}" for n in self.dns_names] + [f"IP:{ip}" for ip in self.ip_addresses]
        )


def etcd_ca_spec(*, validity: timedelta = CA_VALIDITY) -> CertSpec:
    """Spec for the etcd CA; every other etcd certificate chains to it and to nothing else."""
    return CertSpec(name="etcd/ca", common_name="etcd-ca", is_ca=True, validity=validity)


def _member_sans(
    node_name: str, ipv4: str, ipv6: str | None, extra_sans: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Build kubeadm's default etcd SANs for a member plus the configured extras.

    kubeadm's getAltNames uses node name + localhost and advertise IP + 127.0.0.1 + ::1. We add
    the IPv6 address too because the dual-stack listeners in facts.md §4.3 are dialled by it.
    """
    v4 = ipaddress.ip_address(ipv4.strip())
    if not isinstance(v4, ipaddress.IPv4Address):
        raise ValueError(f"ipv4 must be an IPv4 address, got {ipv4!r}")
    ips = [str(v4), "127.0.0.1", "::1"]
    if ipv6 is not None:
        v6 = ipaddress.ip_address(ipv6.strip())
        if not isinstance(v6, ipaddress.IPv6Address):
            raise ValueError(f"ipv6 must be an IPv6 address, got {ipv6!r}")
        ips.append(_normalise_ip(ipv6))
    dns = [_normalise_dns(node_name), "localhost"]
    for extra in extra_sans:
        kind, value = classify_san(extra)
        (ips if kind == "ip" else dns).append(value)
    return _unique(dns), _unique(ips)


def etcd_server_spec(
    node_name: str,
    ipv4: str,
    ipv6: str | None = None,
    extra_sans: Iterable[str] = (),
    *,
    validity: timedelta = LEAF_VALIDITY,
) -> CertSpec:
    """Spec for the cert etcd serves clients with.

    clientAuth stays on next to serverAuth: etcd 3.2+ also uses this cert as a client (kubeadm's
    certlist.go calls it an undocumented requirement).
    """
    dns, ips = _member_sans(node_name, ipv4, ipv6, extra_sans)
    return CertSpec(
        name="etcd/server",
        common_name=node_name,
        server_auth=True,
        client_auth=True,
        dns_names=dns,
        ip_addresses=ips,
        validity=validity,
        issuer="etcd/ca",
    )


def etcd_peer_spec(
    node_name: str,
    ipv4: str,
    ipv6: str | None = None,
    extra_sans: Iterable[str] = (),
    *,
    validity: timedelta = LEAF_VALIDITY,
) -> CertSpec:
    """Spec for the cert members show each other; peers check it both ways, hence both EKUs."""
    dns, ips = _member_sans(node_name, ipv4, ipv6, extra_sans)
    return CertSpec(
        name="etcd/peer",
        common_name=node_name,
        server_auth=True,
        client_auth=True,
        dns_names=dns,
        ip_addresses=ips,
        validity=validity,
        issuer="etcd/ca",
    )


def healthcheck_client_spec(*, validity: timedelta = LEAF_VALIDITY) -> CertSpec:
    """Spec for the client cert etcdctl and homekube's own health checks use."""
    return CertSpec(
        name="etcd/healthcheck-client",
        common_name="kube-etcd-healthcheck-client",
        organizations=_SYSTEM_MASTERS,
        client_auth=True,
        validity=validity,
        issuer="etcd/ca",
    )


def apiserver_etcd_client_spec(*, validity: timedelta = LEAF_VALIDITY) -> CertSpec:
    """Spec for kube-apiserver's etcd client cert; never reuse the server cert for this."""
    return CertSpec(
        name="apiserver-etcd-client",
        common_name="kube-apiserver-etcd-client",
        organizations=_SYSTEM_MASTERS,
        client_auth=True,
        validity=validity,
        issuer="etcd/ca",
    )


def etcd_member_specs(
    node_name: str,
    ipv4: str,
    ipv6: str | None = None,
    extra_sans: Iterable[str] = (),
    *,
    control_plane: bool = True,
    validity: timedelta = LEAF_VALIDITY,
) -> tuple[CertSpec, ...]:
    """List every leaf an etcd member needs, in the order ``member_files`` places them.

    The apiserver client cert only matters where a kube-apiserver runs, so ``control_plane``
    drops it on etcd-only hosts.
    """
    extras = tuple(extra_sans)
    specs = [
        etcd_server_spec(node_name, ipv4, ipv6, extras, validity=validity),
        etcd_peer_spec(node_name, ipv4, ipv6, extras, validity=validity),
        healthcheck_client_spec(validity=validity),
    ]
    if control_plane:
        specs.append(apiserver_etcd_client_spec(validity=validity))
    return tuple(specs)


# --------------------------------------------------------------------------------------------
# File layout on a member
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PkiFile:
    """One file placed on a member: the cert or key of ``spec_name``, and who may read it."""

    path: str
    spec_name: str
    kind: FileKind
    mode: int
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True)
class PkiDir:
    """A directory the files above need, with the mode that keeps their keys private."""

    path: str
    mode: int
    owner: str = "root"
    group: str = "root"


_CERT_MODE = 0o644
_KEY_MODE = 0o600


def _pair(base: str, rel: str, spec_name: str, owner: str, group: str) -> tuple[PkiFile, ...]:
    return (
        PkiFile(f"{base}/{rel}.crt", spec_name, "cert", _CERT_MODE, owner, group),
        PkiFile(f"{base}/{rel}.key", spec_name, "key", _KEY_MODE, owner, group),
    )


def member_files(
    *, control_plane: bool = True, etcd_user: str = "etcd", etcd_group: str = "etcd"
) -> tuple[PkiFile, ...]:
    """List every PKI file an etcd member gets, where it goes and with which mode and owner.

    Two trees: kubeadm's root-only ``/etc/kubernetes/pki`` (the apiserver pod and etcdctl read
    it) and etcd's own copies (``layout.PKI_DIR``) owned by the etcd user, because an etcd unit running as
    ``User=etcd`` cannot read root's 0600 keys (facts.md §4.4). The etcd CA key is never placed
    on any host: it stays in the operator's local state, so a stolen node cannot mint certs.
    """
    k, e = KUBEADM_PKI, ETCD_PKI
    files: list[PkiFile] = [
        PkiFile(f"{k}/etcd/ca.crt", "etcd/ca", "cert", _CERT_MODE),
        *_pair(k, "etcd/server", "etcd/server", "root", "root"),
        *_pair(k, "etcd/peer", "etcd/peer", "root", "root"),
        *_pair(k, "etcd/healthcheck-client", "etcd/healthcheck-client", "root", "root"),
    ]
    if control_plane:
        files += _pair(k, "apiserver-etcd-client", "apiserver-etcd-client", "root", "root")
    files += [
        PkiFile(f"{e}/ca.crt", "etcd/ca", "cert", _CERT_MODE, etcd_user, etcd_group),
        *_pair(e, "server", "etcd/server", etcd_user, etcd_group),
        *_pair(e, "peer", "etcd/peer", etcd_user, etcd_group),
    ]
    return tuple(files)


def member_dirs(*, etcd_user: str = "etcd", etcd_group: str = "etcd") -> tuple[PkiDir, ...]:
    """List the directories ``member_files`` needs, parents first.

    kubeadm's tree is world-traversable (certs are public, each key is 0600 on its own); the
    etcd copy is 0700 so nothing but etcd can even list it.
    """
    return (
        PkiDir(KUBEADM_PKI, 0o755),
        PkiDir(f"{KUBEADM_PKI}/etcd", 0o755),
        PkiDir(ETCD_PKI, 0o700, etcd_user, etcd_group),
    )


# --------------------------------------------------------------------------------------------
# Reading certificates
# --------------------------------------------------------------------------------------------


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (use datetime.now(UTC))")


def _days_between(start: datetime, end: datetime) -> int:
    """Whole days from start to end, rounded down (negative once expired)."""
    return (end - start) // timedelta(days=1)


@dataclass(frozen=True)
class CertInfo:
    """What ``status`` and ``certs`` show about a certificate, without holding the parsed object."""

    subject_cn: str
    organizations: tuple[str, ...]
    issuer_cn: str
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    ext_key_usages: tuple[str, ...]
    is_ca: bool
    serial_hex: str
    sha256_fingerprint: str
    key_type: str

    @property
    def sans(self) -> frozenset[str]:
        """SANs as ``DNS:x`` / ``IP:y`` strings, comparable with ``CertSpec.sans``."""
        return frozenset(
            [f"DNS:{n}" for n in self.dns_names] + [f"IP:{ip}" for ip in self.ip_addresses]
        )

    def days_left(self, now: datetime) -> int:
        """Whole days until expiry at ``now``; negative once expired."""
        _require_aware(now)
        return _days_between(now, self.not_after)


def _name_values(name: x509.Name, oid: x509.ObjectIdentifier) -> tuple[str, ...]:
    return tuple(str(attr.value) for attr in name.get_attributes_for_oid(oid))


def _describe_key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa-p256" if isinstance(key.curve, ec.SECP256R1) else f"ecdsa-{key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    return type(key).__name__


def _info(cert: x509.Certificate) -> CertInfo:
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        # Lenient on read: a foreign cert with an odd name must still be reportable, not crash.
        dns = tuple(n.rstrip(".").lower() for n in san_ext.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san_ext.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        eku_ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        ekus = tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku_ext)
    except x509.ExtensionNotFound:
        ekus = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    cns = _name_values(cert.subject, NameOID.COMMON_NAME)
    issuer_cns = _name_values(cert.issuer, NameOID.COMMON_NAME)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex().upper()
    return CertInfo(
        subject_cn=cns[0] if cns else "",
        organizations=_name_values(cert.subject, NameOID.ORGANIZATION_NAME),
        issuer_cn=issuer_cns[0] if issuer_cns else "",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns,
        ip_addresses=ips,
        ext_key_usages=ekus,
        is_ca=is_ca,
        serial_hex=format(cert.serial_number, "x"),
        # Colon-separated upper-case hex: the form `openssl x509 -fingerprint -sha256` prints.
        sha256_fingerprint=":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2)),
        key_type=_describe_key(cert),
    )


def cert_info(pem: bytes) -> CertInfo:
    """Summarise a PEM certificate; raises ``ValueError`` if it does not parse."""
    return _info(x509.load_pem_x509_certificate(pem))


# --------------------------------------------------------------------------------------------
# The reissue decision
# --------------------------------------------------------------------------------------------


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Check issuer name and signature against the CA's public key (not just the issuer CN)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _fmt_sans(sans: Iterable[str]) -> str:
    return ", ".join(sorted(sans))


def needs_issue(
    spec: CertSpec,
    existing_cert_pem: bytes | None,
    ca_cert_pem: bytes,
    now: datetime,
    renew_within: timedelta,
) -> tuple[bool, str]:
    """Decide whether the cert on a host must be (re)issued, and say why in words.

    All mismatches are reported together ("expires in 9 days; SANs differ: ...") so one
    ``plan`` line explains everything an ``apply`` will fix. For the CA spec itself pass the
    CA cert as both arguments: a self-signed cert verifies against itself and nothing else.
    """
    _require_aware(now)
    if existing_cert_pem is None:
        return True, "missing"
    try:
        cert = x509.load_pem_x509_certificate(existing_cert_pem)
    except ValueError as exc:
        return True, f"unparsable: {exc}"
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    info = _info(cert)

    reasons: list[str] = []
    if not _signed_by(cert, ca):
        reasons.append(f"not signed by this CA (issuer CN={info.issuer_cn!r})")
    if info.subject_cn != spec.common_name:
        reasons.append(f"CN is {info.subject_cn!r}, want {spec.common_name!r}")
    if set(info.organizations) != set(spec.organizations):
        reasons.append(f"O is {list(info.organizations)}, want {list(spec.organizations)}")
    if info.is_ca != spec.is_ca:
        reasons.append("CA flag is set" if info.is_ca else "CA flag is missing")
    if set(info.ext_key_usages) != set(spec.ext_key_usages):
        reasons.append(
            f"EKUs are {list(info.ext_key_usages) or 'none'}, want {list(spec.ext_key_usages)}"
        )
    added, removed = spec.sans - info.sans, info.sans - spec.sans
    if added or removed:
        parts = []
        if added:
            parts.append(f"added {_fmt_sans(added)}")
        if removed:
            parts.append(f"removed {_fmt_sans(removed)}")
        reasons.append("SANs differ: " + "; ".join(parts))
    days = info.days_left(now)
    until = info.not_after.astimezone(UTC).date().isoformat()
    if info.not_before > now:
        reasons.append(f"not valid before {info.not_before.isoformat()} (clock skew?)")
    if info.not_after <= now:
        reasons.append(f"expired on {until}")
    elif info.not_after - now <= renew_within:
        reasons.append(f"expires {until}, in {days} days (renewal window {renew_within.days} days)")

    if reasons:
        return True, "; ".join(reasons)
    sans = ", SANs match" if spec.sans else ""
    return False, f"valid until {until} ({days} days){sans}"
