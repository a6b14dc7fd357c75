"""Make keys and sign certificates from a ``CertSpec``.

No files and no clock: keys and certs go in and out as PEM bytes and ``now`` is passed in, so
the same code serves first issue, renewal and tests with a frozen date. Randomness (keys,
serials) is the only thing not injected.

Choices that differ from, or go beyond, kubeadm's defaults:

* keyEncipherment is set only for RSA keys. It means "the peer encrypts a secret to this key",
  which an ECDSA key cannot do; strict verifiers reject it on EC certs.
* The CA gets ``pathlen:0``: the etcd CA signs leaves only, never another CA.
* A leaf never outlives its CA: ``not_after`` is clamped to the CA's, so ``needs_issue``
  flags it for renewal together with the CA instead of it failing to verify one day.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from homekube.pki.spec import CertSpec, KeyType

__all__ = [
    "BACKDATE",
    "generate_key",
    "issue_ca",
    "issue_cert",
    "key_matches_cert",
    "key_type_of",
]

BACKDATE = timedelta(minutes=5)
"""kubeadm's CertificateBackdate: tolerates a few minutes of clock skew between hosts."""

_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(key_type: KeyType) -> bytes:
    """Generate a private key as unencrypted PKCS#8 PEM.

    Unencrypted because it is written 0600 and read by daemons that cannot prompt for a
    passphrase; the file mode is the protection.
    """
    key: _SigningKey
    if key_type == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa-2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:  # pragma: no cover - Literal keeps callers honest; this guards untyped ones
        raise ValueError(f"unsupported key type {key_type!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(key_pem: bytes) -> _SigningKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    raise ValueError(f"unsupported private key {type(key).__name__}; want ECDSA P-256 or RSA≥2048")


def key_type_of(key_pem: bytes) -> str:
    """Name the algorithm of a private key, e.g. to warn when renewal keeps an old RSA key."""
    key = _load_key(key_pem)
    return "ecdsa-p256" if isinstance(key, ec.EllipticCurvePrivateKey) else f"rsa-{key.key_size}"


def key_matches_cert(key_pem: bytes, cert_pem: bytes) -> bool:
    """Tell whether a key belongs to a cert; a mismatched pair makes etcd fail at start-up."""
    key = _load_key(key_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    return key.public_key() == cert.public_key()


def _serial() -> int:
    """Return a random positive 63-bit serial, like kubeadm; it fits a signed int64 everywhere."""
    return secrets.randbelow(2**63 - 1) + 1


def _seconds(moment: datetime) -> datetime:
    """Drop sub-second precision: X.509 times hold whole seconds and round-trips must compare."""
    return moment.replace(microsecond=0)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (use datetime.now(UTC))")


def _subject(spec: CertSpec) -> x509.Name:
    # O before CN, the order Go's pkix.Name writes, so `openssl x509 -subject` reads like kubeadm's.
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    return x509.Name(attrs)


def _eku(spec: CertSpec) -> x509.ExtendedKeyUsage:
    oids: list[x509.ObjectIdentifier] = []
    if spec.server_auth:
        oids.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if spec.client_auth:
        oids.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return x509.ExtendedKeyUsage(oids)


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san(spec: CertSpec) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_addresses]
    return x509.SubjectAlternativeName(names)


def issue_ca(spec: CertSpec, key_pem: bytes, now: datetime) -> bytes:
    """Self-sign a CA certificate for ``spec`` with ``key_pem``; returns PEM.

    Passing an existing key re-creates a CA cert that still verifies every leaf the old one
    signed (same subject, same key), which is how a lost ``ca.crt`` is recovered.
    """
    _require_aware(now)
    if not spec.is_ca:
        raise ValueError(f"{spec.name} is not a CA spec; use issue_cert")
    key = _load_key(key_pem)
    public = key.public_key()
    subject = _subject(spec)
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(_seconds(now - BACKDATE))
        .not_valid_after(_seconds(now + spec.validity))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True, rsa_key=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_cert(
    spec: CertSpec,
    key_pem: bytes,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    now: datetime,
) -> bytes:
    """Sign a leaf certificate for ``spec`` over ``key_pem`` with the CA; returns PEM.

    The caller picks the key: a fresh one from ``generate_key`` or the current one on renewal,
    which avoids a window where the cert and key files on a host disagree.
    """
    _require_aware(now)
    if spec.is_ca:
        raise ValueError(f"{spec.name} is a CA spec; use issue_ca")
    key = _load_key(key_pem)
    ca_key = _load_key(ca_key_pem)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    if ca_key.public_key() != ca_cert.public_key():
        raise ValueError("the CA key does not belong to the CA certificate")
    public = key.public_key()
    not_after = min(_seconds(now + spec.validity), ca_cert.not_valid_after_utc)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(spec))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(_seconds(now - BACKDATE))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False, rsa_key=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(_eku(spec), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(aki, critical=False)
    )
    if spec.dns_names or spec.ip_addresses:
        builder = builder.add_extension(_san(spec), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)
