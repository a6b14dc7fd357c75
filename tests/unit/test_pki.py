"""Tests for homekube.pki: specs against facts.md §6.1, issuing, the reissue decision, the store."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import homekube.pki
from homekube.errors import HomekubeError
from homekube.pki import (
    BACKDATE,
    CA_VALIDITY,
    ETCD_PKI,
    KUBEADM_PKI,
    LEAF_VALIDITY,
    BrokenCAError,
    CertSpec,
    InsecureKeyError,
    KeyType,
    LocalCA,
    apiserver_etcd_client_spec,
    cert_info,
    classify_san,
    etcd_ca_spec,
    etcd_member_specs,
    etcd_peer_spec,
    etcd_server_spec,
    generate_key,
    healthcheck_client_spec,
    issue_ca,
    issue_cert,
    key_matches_cert,
    key_type_of,
    member_dirs,
    member_files,
    needs_issue,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
WINDOW = timedelta(days=30)
KEY_TYPES: tuple[KeyType, ...] = ("ecdsa-p256", "rsa-2048")

NODE = "node1"
V4 = "192.0.2.10"
V6 = "2001:db8:10::10"
EXTRA = ("node1.home.arpa",)


@cache
def _ca_pair(key_type: KeyType) -> tuple[bytes, bytes]:
    key = generate_key(key_type)
    return issue_ca(etcd_ca_spec(), key, NOW), key


@cache
def _leaf_key(key_type: KeyType) -> bytes:
    return generate_key(key_type)


def ca_pair(key_type: KeyType = "ecdsa-p256") -> tuple[bytes, bytes]:
    """Return (cert, key) of a CA shared by the tests; RSA generation is too slow to repeat."""
    return _ca_pair(key_type)


def leaf_key(key_type: KeyType = "ecdsa-p256") -> bytes:
    return _leaf_key(key_type)


def server_spec(**kw: object) -> CertSpec:
    return etcd_server_spec(NODE, V4, V6, EXTRA, **kw)  # type: ignore[arg-type]


def issue(spec: CertSpec, key_type: KeyType = "ecdsa-p256", now: datetime = NOW) -> bytes:
    ca_cert, ca_key = ca_pair(key_type)
    return issue_cert(spec, leaf_key(key_type), ca_cert, ca_key, now)


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_public_surface_is_pinned() -> None:
    """Changing what homekube.pki exports should be a deliberate edit here, not an accident."""
    assert sorted(homekube.pki.__all__) == sorted(
        [
            "BACKDATE", "CA_VALIDITY", "ETCD_PKI", "KUBEADM_PKI", "LEAF_VALIDITY",
            "BrokenCAError", "CertInfo", "CertSpec", "FileKind", "InsecureKeyError", "KeyType",
            "LocalCA", "PkiDir", "PkiFile", "PkiStoreError",
            "apiserver_etcd_client_spec", "cert_info", "classify_san", "etcd_ca_spec",
            "etcd_member_specs", "etcd_peer_spec", "etcd_server_spec", "generate_key",
            "healthcheck_client_spec", "issue_ca", "issue_cert", "key_matches_cert",
            "key_type_of", "member_dirs", "member_files", "needs_issue",
        ]
    )  # fmt: skip
    for name in homekube.pki.__all__:
        assert hasattr(homekube.pki, name), name


# --------------------------------------------------------------------------------------------
# Specs match facts.md §6.1
# --------------------------------------------------------------------------------------------


def test_ca_spec() -> None:
    spec = etcd_ca_spec()
    assert (spec.name, spec.common_name, spec.organizations) == ("etcd/ca", "etcd-ca", ())
    assert spec.is_ca and spec.issuer is None
    assert spec.ext_key_usages == ()
    assert spec.validity == CA_VALIDITY == timedelta(hours=87600)


@pytest.mark.parametrize("factory", [etcd_server_spec, etcd_peer_spec])
def test_member_specs_follow_kubeadm_defaults(factory: object) -> None:
    spec = factory(NODE, V4, V6, EXTRA)  # type: ignore[operator]
    assert spec.common_name == NODE
    assert spec.organizations == ()
    assert spec.ext_key_usages == ("serverAuth", "clientAuth")
    assert not spec.is_ca and spec.issuer == "etcd/ca"
    assert spec.dns_names == (NODE, "localhost", "node1.home.arpa")
    assert spec.ip_addresses == (V4, "127.0.0.1", "::1", V6)
    assert spec.validity == LEAF_VALIDITY == timedelta(hours=8760)


def test_member_spec_names_and_ipv6_optional() -> None:
    assert etcd_server_spec(NODE, V4).name == "etcd/server"
    assert etcd_peer_spec(NODE, V4).name == "etcd/peer"
    assert etcd_server_spec(NODE, V4).ip_addresses == (V4, "127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("spec", "name", "cn"),
    [
        (healthcheck_client_spec(), "etcd/healthcheck-client", "kube-etcd-healthcheck-client"),
        (apiserver_etcd_client_spec(), "apiserver-etcd-client", "kube-apiserver-etcd-client"),
    ],
)
def test_client_specs(spec: CertSpec, name: str, cn: str) -> None:
    assert (spec.name, spec.common_name) == (name, cn)
    assert spec.organizations == ("system:masters",)
    assert spec.ext_key_usages == ("clientAuth",)
    assert spec.dns_names == () and spec.ip_addresses == ()
    assert spec.issuer == "etcd/ca" and not spec.is_ca


def test_extra_sans_are_classified_normalised_and_deduplicated() -> None:
    spec = etcd_server_spec(
        "node1",
        "192.0.2.10",
        "2001:DB8:10:0::10",
        ["10.0.0.1", "NAS.Home.Arpa.", "2001:db8::0:1", "localhost", "192.0.2.10"],
    )
    assert spec.dns_names == ("node1", "localhost", "nas.home.arpa")
    assert spec.ip_addresses == (
        "192.0.2.10",
        "127.0.0.1",
        "::1",
        "2001:db8:10::10",
        "10.0.0.1",
        "2001:db8::1",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.1.2.3", ("ip", "10.1.2.3")),
        ("fd00::0001", ("ip", "fd00::1")),
        ("etcd.example.org", ("dns", "etcd.example.org")),
        ("*.home.arpa", ("dns", "*.home.arpa")),
    ],
)
def test_classify_san(value: str, expected: tuple[str, str]) -> None:
    assert classify_san(value) == expected


@pytest.mark.parametrize(
    "bad", ["", "under_score", "-lead.example", "a b", "fe80::1%eth0", "[::1]"]
)
def test_classify_san_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        classify_san(bad)


def test_address_family_is_checked() -> None:
    with pytest.raises(ValueError, match="IPv4"):
        etcd_server_spec(NODE, V6)
    with pytest.raises(ValueError, match="IPv6"):
        etcd_server_spec(NODE, V4, "192.0.2.11")


def test_certspec_rejects_inconsistent_specs() -> None:
    with pytest.raises(ValueError, match="issuer"):
        CertSpec(name="x", common_name="x", client_auth=True)
    with pytest.raises(ValueError, match="self-signed"):
        CertSpec(name="x", common_name="x", is_ca=True, issuer="etcd/ca")
    with pytest.raises(ValueError, match="serverAuth"):
        CertSpec(name="x", common_name="x", issuer="etcd/ca")
    with pytest.raises(ValueError, match="positive"):
        replace(healthcheck_client_spec(), validity=timedelta(0))


def test_member_specs_drop_apiserver_client_off_the_control_plane() -> None:
    names = [s.name for s in etcd_member_specs(NODE, V4, V6)]
    assert names == [
        "etcd/server",
        "etcd/peer",
        "etcd/healthcheck-client",
        "apiserver-etcd-client",
    ]
    assert "apiserver-etcd-client" not in [
        s.name for s in etcd_member_specs(NODE, V4, control_plane=False)
    ]


# --------------------------------------------------------------------------------------------
# File layout
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("control_plane", [True, False])
def test_ca_key_never_leaves_the_operator(control_plane: bool) -> None:
    files = member_files(control_plane=control_plane)
    assert not [f for f in files if f.spec_name == "etcd/ca" and f.kind == "key"]
    assert not [f for f in files if f.path.endswith("ca.key")]


def test_member_files_layout() -> None:
    by_path = {f.path: f for f in member_files()}
    expected_kubeadm = [
        "etcd/ca.crt",
        "etcd/server.crt",
        "etcd/server.key",
        "etcd/peer.crt",
        "etcd/peer.key",
        "etcd/healthcheck-client.crt",
        "etcd/healthcheck-client.key",
        "apiserver-etcd-client.crt",
        "apiserver-etcd-client.key",
    ]
    expected_etcd = ["ca.crt", "server.crt", "server.key", "peer.crt", "peer.key"]
    assert sorted(by_path) == sorted(
        [f"{KUBEADM_PKI}/{p}" for p in expected_kubeadm]
        + [f"{ETCD_PKI}/{p}" for p in expected_etcd]
    )
    for path, f in by_path.items():
        assert f.mode == (0o600 if f.kind == "key" else 0o644), path
        assert path.endswith(".key") == (f.kind == "key")
        owner = ("etcd", "etcd") if path.startswith(ETCD_PKI) else ("root", "root")
        assert (f.owner, f.group) == owner, path
    assert by_path[f"{ETCD_PKI}/server.key"].spec_name == "etcd/server"
    assert by_path[f"{KUBEADM_PKI}/apiserver-etcd-client.crt"].spec_name == "apiserver-etcd-client"


def test_member_files_control_plane_flag_and_custom_user() -> None:
    files = member_files(control_plane=False, etcd_user="etcd2", etcd_group="daemon")
    assert not [f for f in files if "apiserver-etcd-client" in f.path]
    assert {(f.owner, f.group) for f in files if f.path.startswith(ETCD_PKI)} == {
        ("etcd2", "daemon")
    }


def test_member_dirs_keep_etcd_copy_private() -> None:
    dirs = {d.path: d for d in member_dirs()}
    assert dirs[ETCD_PKI].mode == 0o700 and dirs[ETCD_PKI].owner == "etcd"
    # Every file's directory is listed, and parents come before their children.
    order = list(dirs)
    for i, path in enumerate(order):
        assert all(not p.startswith(path + "/") for p in order[:i]), order
    for f in member_files():
        assert os.path.dirname(f.path) in dirs


# --------------------------------------------------------------------------------------------
# Issuing
# --------------------------------------------------------------------------------------------


def openssl_verify(tmp_path: Path, ca_pem: bytes, cert_pem: bytes, *args: str) -> str:
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "cert.pem"
    ca_file.write_bytes(ca_pem)
    cert_file.write_bytes(cert_pem)
    # -attime: the certs are issued at a fixed NOW, which may be in the past or future.
    at = str(int((NOW + timedelta(days=1)).timestamp()))
    result = subprocess.run(
        ["openssl", "verify", "-attime", at, *args, "-CAfile", str(ca_file), str(cert_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


ALL_LEAVES = [
    server_spec(),
    etcd_peer_spec(NODE, V4, V6, EXTRA),
    healthcheck_client_spec(),
    apiserver_etcd_client_spec(),
]


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("spec", ALL_LEAVES, ids=lambda s: s.name)
def test_issued_certs_verify_with_openssl(
    tmp_path: Path, key_type: KeyType, spec: CertSpec
) -> None:
    ca_cert, _ = ca_pair(key_type)
    cert = issue(spec, key_type)
    out = openssl_verify(tmp_path, ca_cert, cert)
    assert out.strip().endswith(": OK"), out
    # openssl's purpose check reads the EKUs, so it proves the usages are really in the cert.
    for purpose, wanted in (("sslclient", spec.client_auth), ("sslserver", spec.server_auth)):
        out = openssl_verify(tmp_path, ca_cert, cert, "-purpose", purpose)
        assert out.strip().endswith(": OK") == wanted, (purpose, out)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_ca_extensions(key_type: KeyType) -> None:
    ca_cert, ca_key = ca_pair(key_type)
    cert = load(ca_cert)
    assert key_matches_cert(ca_key, ca_cert)
    assert key_type_of(ca_key) == key_type
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    assert not ku.value.key_encipherment
    assert cert.not_valid_before_utc == NOW - BACKDATE
    assert cert.not_valid_after_utc == NOW + CA_VALIDITY
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    cert.verify_directly_issued_by(cert)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_leaf_extensions(key_type: KeyType) -> None:
    ca = load(ca_pair(key_type)[0])
    cert = load(issue(server_spec(), key_type))
    assert 0 < cert.serial_number < 2**63
    assert cert.not_valid_before_utc == NOW - BACKDATE
    assert cert.not_valid_after_utc == NOW + LEAF_VALIDITY
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert ku.value.key_encipherment == (key_type == "rsa-2048")
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_client_certs_carry_no_san_extension() -> None:
    cert = load(issue(healthcheck_client_spec()))
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert cert.subject.rfc4514_string() == "CN=kube-etcd-healthcheck-client,O=system:masters"


def test_serials_differ() -> None:
    serials = {load(issue(healthcheck_client_spec())).serial_number for _ in range(20)}
    assert len(serials) == 20


def test_renewal_can_keep_the_key() -> None:
    first = issue(server_spec())
    later = issue(server_spec(), now=NOW + timedelta(days=300))
    assert load(first).public_key() == load(later).public_key()
    assert key_matches_cert(leaf_key(), later)
    assert not key_matches_cert(generate_key("ecdsa-p256"), later)


def test_leaf_never_outlives_its_ca() -> None:
    ca_cert, ca_key = ca_pair()
    late = NOW + CA_VALIDITY - timedelta(days=100)
    cert = load(issue_cert(server_spec(), leaf_key(), ca_cert, ca_key, late))
    assert cert.not_valid_after_utc == load(ca_cert).not_valid_after_utc


def test_issue_refuses_misuse() -> None:
    ca_cert, ca_key = ca_pair()
    with pytest.raises(ValueError, match="CA spec"):
        issue_cert(etcd_ca_spec(), leaf_key(), ca_cert, ca_key, NOW)
    with pytest.raises(ValueError, match="not a CA"):
        issue_ca(server_spec(), ca_key, NOW)
    with pytest.raises(ValueError, match="does not belong"):
        issue_cert(server_spec(), leaf_key(), ca_cert, generate_key("ecdsa-p256"), NOW)
    with pytest.raises(ValueError, match="timezone"):
        issue_cert(server_spec(), leaf_key(), ca_cert, ca_key, NOW.replace(tzinfo=None))


def test_cert_info_matches_openssl(tmp_path: Path) -> None:
    pem = issue(server_spec())
    info = cert_info(pem)
    path = tmp_path / "c.pem"
    path.write_bytes(pem)
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256", "-serial"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Fingerprint={info.sha256_fingerprint}" in out
    assert f"serial={info.serial_hex.upper()}" in out.replace("serial=0", "serial=")
    assert (info.subject_cn, info.issuer_cn, info.is_ca) == (NODE, "etcd-ca", False)
    assert info.ext_key_usages == ("serverAuth", "clientAuth")
    assert info.key_type == "ecdsa-p256"
    assert info.days_left(NOW) == 365
    assert info.days_left(NOW + timedelta(days=400)) < 0


# --------------------------------------------------------------------------------------------
# needs_issue
# --------------------------------------------------------------------------------------------


def test_needs_issue_when_missing() -> None:
    assert needs_issue(server_spec(), None, ca_pair()[0], NOW, WINDOW) == (True, "missing")


def test_needs_issue_when_unparsable() -> None:
    must, why = needs_issue(server_spec(), b"garbage", ca_pair()[0], NOW, WINDOW)
    assert must and why.startswith("unparsable")


def test_valid_cert_is_kept() -> None:
    cert = issue(server_spec())
    assert needs_issue(server_spec(), cert, ca_pair()[0], NOW, WINDOW) == (
        False,
        "valid until 2027-03-01 (365 days), SANs match",
    )


def test_valid_client_cert_reason_has_no_san_claim() -> None:
    spec = healthcheck_client_spec()
    must, why = needs_issue(spec, issue(spec), ca_pair()[0], NOW, WINDOW)
    assert not must and why == "valid until 2027-03-01 (365 days)"


def test_expiring_inside_the_window() -> None:
    cert = issue(server_spec())
    now = load(cert).not_valid_after_utc - timedelta(days=10)
    must, why = needs_issue(server_spec(), cert, ca_pair()[0], now, WINDOW)
    assert must
    assert "in 10 days" in why and "2027-03-01" in why
    # Just outside the window it is kept.
    now = load(cert).not_valid_after_utc - timedelta(days=31)
    assert not needs_issue(server_spec(), cert, ca_pair()[0], now, WINDOW)[0]


def test_expired() -> None:
    cert = issue(server_spec())
    must, why = needs_issue(server_spec(), cert, ca_pair()[0], NOW + timedelta(days=400), WINDOW)
    assert must and "expired on 2027-03-01" in why


def test_san_change_lists_what_is_added_and_removed() -> None:
    cert = issue(etcd_server_spec(NODE, V4, None, EXTRA))
    must, why = needs_issue(server_spec(), cert, ca_pair()[0], NOW, WINDOW)
    assert must
    assert why == f"SANs differ: added IP:{V6}"
    must, why = needs_issue(etcd_server_spec(NODE, V4), cert, ca_pair()[0], NOW, WINDOW)
    assert must and why == "SANs differ: removed DNS:node1.home.arpa"


def test_differently_spelled_ips_are_not_a_change() -> None:
    cert = issue(server_spec())
    spec = etcd_server_spec(NODE, V4, "2001:DB8:10:0:0:0:0:10", ["Node1.Home.Arpa."])
    assert not needs_issue(spec, cert, ca_pair()[0], NOW, WINDOW)[0]


def test_wrong_ca() -> None:
    other_key = generate_key("ecdsa-p256")
    other_ca = issue_ca(etcd_ca_spec(), other_key, NOW)
    cert = issue(server_spec())
    must, why = needs_issue(server_spec(), cert, other_ca, NOW, WINDOW)
    assert must and why.startswith("not signed by this CA")


def test_same_name_but_different_ca_key_is_caught() -> None:
    """An attacker's CA called "etcd-ca" must not pass: the check is on the signature."""
    fake_key = generate_key("ecdsa-p256")
    fake_ca = issue_ca(etcd_ca_spec(), fake_key, NOW)
    forged = issue_cert(server_spec(), leaf_key(), fake_ca, fake_key, NOW)
    must, why = needs_issue(server_spec(), forged, ca_pair()[0], NOW, WINDOW)
    assert cert_info(forged).issuer_cn == "etcd-ca"
    assert must and "not signed by this CA" in why


def test_cn_and_eku_changes() -> None:
    ca = ca_pair()[0]
    healthcheck = issue(healthcheck_client_spec())
    must, why = needs_issue(apiserver_etcd_client_spec(), healthcheck, ca, NOW, WINDOW)
    assert must and "CN is 'kube-etcd-healthcheck-client'" in why
    must, why = needs_issue(server_spec(), healthcheck, ca, NOW, WINDOW)
    assert must and "EKUs are ['clientAuth'], want ['serverAuth', 'clientAuth']" in why
    assert "O is ['system:masters'], want []" in why


def test_several_reasons_are_reported_together() -> None:
    cert = issue(etcd_server_spec(NODE, V4))
    now = load(cert).not_valid_after_utc - timedelta(days=5)
    must, why = needs_issue(server_spec(), cert, ca_pair()[0], now, WINDOW)
    assert must and "SANs differ" in why and "in 5 days" in why


def test_ca_spec_checked_against_itself() -> None:
    ca_cert, _ = ca_pair()
    assert not needs_issue(etcd_ca_spec(), ca_cert, ca_cert, NOW, WINDOW)[0]
    other = issue_ca(etcd_ca_spec(), generate_key("ecdsa-p256"), NOW)
    assert needs_issue(etcd_ca_spec(), other, ca_cert, NOW, WINDOW)[0]


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        needs_issue(server_spec(), None, ca_pair()[0], NOW.replace(tzinfo=None), WINDOW)


# --------------------------------------------------------------------------------------------
# LocalCA
# --------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_local_ca_created_with_private_modes(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    assert ca.created
    assert ca.directory == tmp_path / "pki" / "etcd"
    assert mode(tmp_path / "pki") == 0o700
    assert mode(ca.directory) == 0o700
    assert mode(ca.key_path) == 0o600
    assert mode(ca.cert_path) == 0o644
    assert mode(ca.directory / ".lock") == 0o600
    assert ca.cert_path.read_bytes() == ca.cert_pem
    assert ca.key_path.read_bytes() == ca.key_pem
    assert ca.info.subject_cn == "etcd-ca" and ca.info.is_ca
    assert not [p for p in ca.directory.iterdir() if p.name.endswith(".tmp")]
    assert "PRIVATE" not in repr(ca)


def test_local_ca_modes_do_not_depend_on_umask(tmp_path: Path, umask_077: None) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    assert (mode(ca.cert_path), mode(ca.key_path)) == (0o644, 0o600)


def test_local_ca_is_loaded_not_recreated(tmp_path: Path) -> None:
    first = LocalCA.load_or_create(tmp_path, now=NOW)
    again = LocalCA.load_or_create(tmp_path, key_type="rsa-2048", now=NOW)
    loaded = LocalCA.load(tmp_path)
    assert not again.created and not loaded.created
    assert first.cert_pem == again.cert_pem == loaded.cert_pem
    assert first.key_pem == again.key_pem == loaded.key_pem


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_local_ca_issues_verifiable_certs(tmp_path: Path, key_type: KeyType) -> None:
    ca = LocalCA.load_or_create(tmp_path, key_type=key_type, now=NOW)
    assert key_type_of(ca.key_pem) == key_type
    cert = ca.issue(server_spec(), leaf_key(), NOW)
    out = openssl_verify(tmp_path, ca.cert_pem, cert)
    assert out.strip().endswith(": OK"), out


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o660])
def test_group_or_world_readable_key_is_refused(tmp_path: Path, bad_mode: int) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    ca.key_path.chmod(bad_mode)
    with pytest.raises(InsecureKeyError, match=f"{bad_mode:04o}") as exc:
        LocalCA.load_or_create(tmp_path, now=NOW)
    assert "chmod 600" in exc.value.hint
    assert isinstance(exc.value, HomekubeError)  # so the CLI shows message + hint, no traceback
    with pytest.raises(InsecureKeyError):
        LocalCA.load(tmp_path)


def test_open_ca_directory_is_refused(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    ca.directory.chmod(0o755)
    with pytest.raises(InsecureKeyError, match="0755"):
        LocalCA.load(tmp_path)


def test_symlinked_key_is_refused(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path / "a", now=NOW)
    other = LocalCA.load_or_create(tmp_path / "b", now=NOW)
    other.key_path.unlink()
    other.key_path.symlink_to(ca.key_path)
    with pytest.raises(BrokenCAError, match="symlink"):
        LocalCA.load(tmp_path / "b")


def test_lost_cert_is_rebuilt_and_old_leaves_still_verify(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    leaf = ca.issue(server_spec(), leaf_key(), NOW)
    ca.cert_path.unlink()
    rebuilt = LocalCA.load_or_create(tmp_path, now=NOW + timedelta(days=1))
    assert not rebuilt.created
    assert rebuilt.key_pem == ca.key_pem and rebuilt.cert_pem != ca.cert_pem
    assert not needs_issue(server_spec(), leaf, rebuilt.cert_pem, NOW, WINDOW)[0]


def test_lost_key_is_not_papered_over(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    ca.key_path.unlink()
    with pytest.raises(BrokenCAError, match=r"ca\.key is gone"):
        LocalCA.load_or_create(tmp_path, now=NOW)
    with pytest.raises(BrokenCAError, match="no etcd CA"):
        LocalCA.load(tmp_path)


def test_mismatched_pair_is_refused(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    ca.cert_path.write_bytes(ca_pair()[0])
    with pytest.raises(BrokenCAError, match="does not belong"):
        LocalCA.load(tmp_path)


def test_non_ca_cert_is_refused(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path, now=NOW)
    ca.cert_path.write_bytes(ca.issue(healthcheck_client_spec(), ca.key_pem, NOW))
    with pytest.raises(BrokenCAError, match="not a CA"):
        LocalCA.load(tmp_path)


# --------------------------------------------------------------------------------------------
# Property: SANs survive the round trip through a real certificate
# --------------------------------------------------------------------------------------------

_LABEL = r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?"
dns_names = st.from_regex(rf"\A{_LABEL}(\.{_LABEL}){{0,3}}\Z", fullmatch=True)
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
extras = st.lists(st.one_of(dns_names, ipv4s, ipv6s), max_size=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    node=st.from_regex(rf"\A{_LABEL}\Z", fullmatch=True),  # node names are DNS labels (config.NAME_RE)
    v4=ipv4s,
    v6=st.none() | ipv6s,
    extra=extras,
    peer=st.booleans(),
)
def test_sans_round_trip_through_cert_info(
    node: str, v4: str, v6: str | None, extra: list[str], peer: bool
) -> None:
    factory = etcd_peer_spec if peer else etcd_server_spec
    spec = factory(node, v4, v6, extra)
    info = cert_info(issue(spec))

    wanted_ips = {str(ipaddress.ip_address(a)) for a in [v4, "127.0.0.1", "::1"]}
    wanted_dns = {node, "localhost"}
    if v6 is not None:
        wanted_ips.add(str(ipaddress.ip_address(v6)))
    for e in extra:
        try:
            wanted_ips.add(str(ipaddress.ip_address(e)))
        except ValueError:
            wanted_dns.add(e)

    assert set(info.ip_addresses) == wanted_ips
    assert set(info.dns_names) == wanted_dns
    assert info.dns_names == spec.dns_names and info.ip_addresses == spec.ip_addresses
    assert info.sans == spec.sans
    assert not needs_issue(spec, issue(spec), ca_pair()[0], NOW, WINDOW)[0]
