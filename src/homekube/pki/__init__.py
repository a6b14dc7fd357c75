"""etcd PKI: what each certificate must contain, issuing it, and the local CA store.

``spec`` and ``issue`` are pure (the clock is always passed in); ``store`` is the only part
that touches disk, and only the operator's local state directory.
"""

from homekube.pki.issue import (
    BACKDATE,
    generate_key,
    issue_ca,
    issue_cert,
    key_matches_cert,
    key_type_of,
)
from homekube.pki.spec import (
    CA_VALIDITY,
    ETCD_PKI,
    KUBEADM_PKI,
    LEAF_VALIDITY,
    CertInfo,
    CertSpec,
    FileKind,
    KeyType,
    PkiDir,
    PkiFile,
    apiserver_etcd_client_spec,
    cert_info,
    classify_san,
    etcd_ca_spec,
    etcd_member_specs,
    etcd_peer_spec,
    etcd_server_spec,
    healthcheck_client_spec,
    member_dirs,
    member_files,
    needs_issue,
)
from homekube.pki.store import BrokenCAError, InsecureKeyError, LocalCA, PkiStoreError

__all__ = [
    "BACKDATE",
    "CA_VALIDITY",
    "ETCD_PKI",
    "KUBEADM_PKI",
    "LEAF_VALIDITY",
    "BrokenCAError",
    "CertInfo",
    "CertSpec",
    "FileKind",
    "InsecureKeyError",
    "KeyType",
    "LocalCA",
    "PkiDir",
    "PkiFile",
    "PkiStoreError",
    "apiserver_etcd_client_spec",
    "cert_info",
    "classify_san",
    "etcd_ca_spec",
    "etcd_member_specs",
    "etcd_peer_spec",
    "etcd_server_spec",
    "generate_key",
    "healthcheck_client_spec",
    "issue_ca",
    "issue_cert",
    "key_matches_cert",
    "key_type_of",
    "member_dirs",
    "member_files",
    "needs_issue",
]
