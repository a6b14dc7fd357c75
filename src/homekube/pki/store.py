"""Keep the etcd CA on the operator's machine, under the homekube state directory.

The CA key never goes to a host (see ``member_files``); this module is the only place it is
read or written. Layout::

    <state>/pki/            0700
    <state>/pki/etcd/       0700
        ca.crt              0644
        ca.key              0600
        .lock               0600   serialises two homekube runs creating the CA at once

Files are created with their final mode by ``os.open`` (never chmod after the bytes are on
disk) and land by rename, so a crash leaves either the old file or the new one, never half.

Exceptions::

    HomekubeError (homekube.errors)
    └── PkiStoreError           anything wrong with the local CA files; carries path and hint
        ├── InsecureKeyError    key file or CA directory is open to group/others; refused
        └── BrokenCAError       files exist but are no usable CA (no key, mismatch, not a CA)
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from homekube.errors import HomekubeError
from homekube.pki.issue import generate_key, issue_ca, issue_cert, key_matches_cert
from homekube.pki.spec import CertInfo, CertSpec, KeyType, cert_info, etcd_ca_spec

__all__ = ["BrokenCAError", "InsecureKeyError", "LocalCA", "PkiStoreError"]

_DIR_MODE = 0o700
_CERT_MODE = 0o644
_KEY_MODE = 0o600
_PRIVATE_BITS = stat.S_IRWXG | stat.S_IRWXO


class PkiStoreError(HomekubeError):
    """The local CA cannot be used; ``hint`` tells the operator what to do about it."""

    hint: str

    def __init__(self, message: str, *, path: Path, hint: str) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path


class InsecureKeyError(PkiStoreError):
    """A key (or its directory) others can read may already be copied; do not keep using it."""


class BrokenCAError(PkiStoreError):
    """CA files exist but are inconsistent; guessing a fix could orphan every issued cert."""


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temp file created with ``mode`` and renamed into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        # The umask can only narrow the mode (e.g. 0644 -> 0600); set it exactly while the file
        # is still empty, so no byte is ever readable by more than ``mode`` allows.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; otherwise a power cut can lose the new file."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` 0700, or refuse an existing one that others can enter."""
    with suppress(FileExistsError):
        directory.mkdir(mode=_DIR_MODE)
    _check_private_dir(directory)


def _check_private_dir(directory: Path) -> None:
    """Refuse a CA directory that is a symlink, not a directory, or open to group/others."""
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise BrokenCAError(
            "is not a directory", path=directory, hint="move it away; homekube owns this path"
        )
    if st.st_mode & _PRIVATE_BITS:
        raise InsecureKeyError(
            f"directory mode is {stat.S_IMODE(st.st_mode):04o}; group/others may reach the CA key",
            path=directory,
            hint=f"chmod 700 {directory} (and treat the CA key as leaked if others could read it)",
        )


def _read_key(path: Path) -> bytes:
    """Read a private key, refusing symlinks and any file group or others can touch.

    The mode is checked on the open descriptor, so the file cannot be swapped between the
    check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise BrokenCAError(
            "is a symlink; the CA key must be a plain file", path=path, hint="replace the link"
        ) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BrokenCAError("is not a regular file", path=path, hint="move it away")
        if st.st_mode & _PRIVATE_BITS:
            raise InsecureKeyError(
                f"key file mode is {stat.S_IMODE(st.st_mode):04o}; it must be 0600",
                path=path,
                hint=(
                    f"chmod 600 {path} if nobody else could have read it; otherwise rotate the "
                    "etcd CA (a new CA means re-issuing every etcd certificate)"
                ),
            )
        chunks: list[bytes] = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock so two runs never each create a different CA."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@dataclass(frozen=True)
class LocalCA:
    """The etcd CA as PEM bytes plus where it lives; the key is kept out of ``repr``."""

    directory: Path
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    created: bool = False
    """True when this call generated a new CA; every etcd cert must then be issued anew."""

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def info(self) -> CertInfo:
        return cert_info(self.cert_pem)

    @staticmethod
    def directory_for(state_dir: Path) -> Path:
        """Where the etcd CA lives under a state directory."""
        return state_dir / "pki" / "etcd"

    @classmethod
    def load(cls, state_dir: Path) -> LocalCA:
        """Load an existing CA; raise ``PkiStoreError`` if it is missing, broken or exposed."""
        directory = cls.directory_for(state_dir)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if not cert_path.exists() or not key_path.exists():
            raise BrokenCAError(
                "no etcd CA here",
                path=directory,
                hint="run `homekube apply` to create one, or restore the state directory",
            )
        _check_private_dir(directory.parent)
        _check_private_dir(directory)
        return cls._validated(directory, cert_path.read_bytes(), _read_key(key_path))

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        *,
        key_type: KeyType = "ecdsa-p256",
        now: datetime | None = None,
    ) -> LocalCA:
        """Load the etcd CA, creating it (or its lost certificate) when absent.

        A key without a cert is repaired by self-signing a new cert for the same key and
        subject: every leaf signed before still verifies against it, so nothing is orphaned.
        A cert without its key is not repaired: nothing can sign for it any more.
        """
        moment = now if now is not None else datetime.now(UTC)
        pki = state_dir / "pki"
        directory = cls.directory_for(state_dir)
        state_dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        _ensure_private_dir(pki)
        _ensure_private_dir(directory)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        with _locked(directory):
            has_cert, has_key = cert_path.exists(), key_path.is_symlink() or key_path.exists()
            if has_cert and not has_key:
                raise BrokenCAError(
                    "ca.crt exists but ca.key is gone; nothing can sign for this CA",
                    path=key_path,
                    hint=(
                        "restore ca.key from a backup, or move ca.crt away to create a new CA "
                        "(then every etcd certificate is re-issued and etcd restarts)"
                    ),
                )
            if has_cert:
                return cls._validated(directory, cert_path.read_bytes(), _read_key(key_path))
            spec = etcd_ca_spec()
            if has_key:
                key_pem = _read_key(key_path)
            else:
                key_pem = generate_key(key_type)
                _write_atomic(key_path, key_pem, _KEY_MODE)
            # Written last: a present ca.crt means the key next to it is complete.
            cert_pem = issue_ca(spec, key_pem, moment)
            _write_atomic(cert_path, cert_pem, _CERT_MODE)
            return cls(directory, cert_pem, key_pem, created=not has_key)

    @classmethod
    def _validated(cls, directory: Path, cert_pem: bytes, key_pem: bytes) -> LocalCA:
        cert_path = directory / "ca.crt"
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            matches = key_matches_cert(key_pem, cert_pem)
        except ValueError as exc:
            raise BrokenCAError(
                f"cannot parse the CA: {exc}", path=directory, hint="restore from a backup"
            ) from exc
        if not matches:
            raise BrokenCAError(
                "ca.key does not belong to ca.crt",
                path=directory,
                hint="restore the matching pair from a backup",
            )
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise BrokenCAError(
                "ca.crt is not a CA certificate", path=cert_path, hint="restore from a backup"
            )
        return cls(directory, cert_pem, key_pem)

    def issue(self, spec: CertSpec, key_pem: bytes, now: datetime) -> bytes:
        """Sign a leaf for ``spec`` with this CA; see ``issue_cert``."""
        return issue_cert(spec, key_pem, self.cert_pem, self.key_pem, now)
