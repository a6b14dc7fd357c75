"""A small signed apt repository writer: .deb files in, a directory apt accepts out.

Two layouts, both signed (InRelease + Release.gpg) with a lab GPG key:

    flat, as pkgs.k8s.io serves it:    deb [signed-by=KEYRING] URL /
        <dest>/Packages  Packages.gz  Release  InRelease  Release.gpg  Release.key  *.deb
    dists, as a Debian mirror:         deb [signed-by=KEYRING] URL bookworm main
        <dest>/dists/bookworm/{Release,InRelease,Release.gpg}
        <dest>/dists/bookworm/main/binary-amd64/{Packages,Packages.gz}
        <dest>/pool/main/*.deb         <dest>/Release.key

Use:

    key = SigningKey.ensure(Path("/var/cache/homekube/lab-apt-gpg"))   # generated once
    write_flat_repo(debs, Path("/srv/mirror/kubernetes/v1.36/deb"), key)
    write_dists_repo(debs, Path("/srv/mirror/debian"), key, suite="bookworm")
    host_keyring = key.keyring()          # binary keyring for /etc/apt/keyrings/x.gpg
    line = source_line(url, key_path="/etc/apt/keyrings/x.gpg")           # flat
    line = source_line(url, key_path=..., suite="bookworm")               # dists, main

Both writers build into a temporary sibling of `dest` and swap it in, so a reader (apt on a
host, the mirror's HTTP server) never sees a half-written repository. The .debs are
hard-linked when `dest` is on their file system, copied otherwise. Everything that runs a
command has a timeout and fails with a LabError naming the step.

The pure parts (`parse_control`, `packages_entry`, `packages_text`, `release_text`) take and
return text only, so they are unit-tested without gpg or dpkg.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from homekube.lab.system import LabError, exclusive_lock

__all__ = [
    "FileHashes",
    "PackageEntry",
    "SigningKey",
    "hash_bytes",
    "hash_file",
    "packages_entry",
    "packages_text",
    "parse_control",
    "pool_name",
    "read_deb",
    "release_text",
    "source_line",
    "write_dists_repo",
    "write_flat_repo",
]

#: Name and e-mail of the key `SigningKey.ensure` generates (.invalid: never a real address).
KEY_UID = "homekube lab apt repository <apt@homekube.invalid>"
#: Seconds any one gpg or dpkg-deb call may take before the step fails.
COMMAND_TIMEOUT = 60.0
#: Fields apt-ftparchive adds to a Packages entry; a .deb's own control never has them.
_INDEX_FIELDS = ("Filename", "Size", "MD5sum", "SHA1", "SHA256")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# ------------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class FileHashes:
    """Size and digests of one file, as Packages and Release list them."""

    size: int
    md5: str
    sha1: str
    sha256: str


def hash_bytes(data: bytes) -> FileHashes:
    return FileHashes(
        size=len(data),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def parse_control(text: str) -> list[tuple[str, str]]:
    """Split a deb822 paragraph into (field, value) pairs, continuation lines kept verbatim.

    A multi-line value (Description) keeps its newlines and leading spaces, so writing
    `f"{field}: {value}"` gives the original lines back.
    """
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one paragraph only
            continue
        if line[0] in " \t":
            if not fields:
                raise ValueError(f"continuation line before any field: {line!r}")
            name, value = fields[-1]
            fields[-1] = (name, f"{value}\n{line}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name:
            raise ValueError(f"not a control field: {line!r}")
        fields.append((name, value.strip()))
    if not fields or fields[0][0] != "Package":
        raise ValueError("a package's control data must start with its Package field")
    return fields


@dataclass(frozen=True)
class PackageEntry:
    """One .deb as the index lists it: its control fields plus where and what it is."""

    control: tuple[tuple[str, str], ...]
    filename: str  # relative to the repository's base URL
    hashes: FileHashes

    def field(self, name: str) -> str | None:
        for k, v in self.control:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def package(self) -> str:
        return self.control[0][1]

    @property
    def version(self) -> str:
        return self.field("Version") or ""

    @property
    def architecture(self) -> str:
        return self.field("Architecture") or ""


def packages_entry(entry: PackageEntry) -> str:
    """The Packages paragraph of one .deb (no trailing blank line)."""
    lines = [f"{k}: {v}" for k, v in entry.control if k not in _INDEX_FIELDS]
    h = entry.hashes
    lines += [
        f"Filename: {entry.filename}",
        f"Size: {h.size}",
        f"MD5sum: {h.md5}",
        f"SHA1: {h.sha1}",
        f"SHA256: {h.sha256}",
    ]
    return "\n".join(lines)


def pool_name(entry: PackageEntry) -> str:
    """`<package>_<version without epoch>_<arch>.deb`, Debian's pool file name.

    Never the name `apt-get download` gives (`1%3a1.4.7`): a `%` in a URL path is an escape.
    """
    version = entry.version.split(":", 1)[-1]
    return f"{entry.package}_{version}_{entry.architecture}.deb"


def packages_text(entries: Iterable[PackageEntry]) -> str:
    """A whole Packages file: paragraphs sorted by package, version and file, blank-separated."""
    ordered = sorted(entries, key=lambda e: (e.package, e.version, e.filename))
    return "".join(packages_entry(e) + "\n\n" for e in ordered)


def _release_date(when: datetime) -> str:
    # RFC 2822 with English names whatever the locale, as apt-ftparchive writes it
    t = when.astimezone(UTC)
    return (
        f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} UTC"
    )


def release_text(
    files: Mapping[str, FileHashes],
    *,
    date: datetime,
    architectures: Sequence[str],
    suite: str | None = None,
    codename: str | None = None,
    components: Sequence[str] = (),
    origin: str = "homekube lab",
    label: str = "homekube lab",
    description: str | None = None,
) -> str:
    """The Release file listing `files` (paths relative to the Release file) with their hashes.

    A flat repository passes no suite and no components; a dists/ one passes both.
    """
    lines = [f"Origin: {origin}", f"Label: {label}"]
    if suite:
        lines.append(f"Suite: {suite}")
    if codename:
        lines.append(f"Codename: {codename}")
    lines += [f"Date: {_release_date(date)}", f"Architectures: {' '.join(architectures)}"]
    if components:
        lines.append(f"Components: {' '.join(components)}")
    if description:
        lines.append(f"Description: {description}")
    width = max((len(str(h.size)) for h in files.values()), default=1)
    for title, attr in (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256")):
        lines.append(f"{title}:")
        for path in sorted(files):
            h = files[path]
            lines.append(f" {getattr(h, attr)} {h.size:>{width}} {path}")
    return "\n".join(lines) + "\n"


def source_line(
    url: str, *, key_path: str, suite: str | None = None, component: str = "main"
) -> str:
    """The one-line apt source for a repository written here (flat when suite is None)."""
    base = url if url.endswith("/") else url + "/"
    where = "/" if suite is None else f"{suite} {component}"
    return f"deb [signed-by={key_path}] {base} {where}"


# -------------------------------------------------------------------------------------- I/O


def _run(
    argv: Sequence[str],
    step: str,
    *,
    input: bytes | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> bytes:
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise LabError(f"{step}: command not found: {argv[0]}") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{step}: {argv[0]} did not finish within {timeout:.0f} s") from e
    if cp.returncode != 0:
        detail = cp.stderr.decode(errors="replace").strip()[-800:]
        raise LabError(f"{step}: {argv[0]} failed (exit {cp.returncode}): {detail}")
    return cp.stdout


def hash_file(path: Path) -> FileHashes:
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            size += len(chunk)
            md5.update(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    return FileHashes(size, md5.hexdigest(), sha1.hexdigest(), sha256.hexdigest())


def read_deb(path: Path, *, filename: str) -> PackageEntry:
    """Index entry of one .deb (control fields via `dpkg-deb -f`); filename as apt will fetch it."""
    text = _run(["dpkg-deb", "-f", str(path)], f"reading {path.name}").decode(errors="replace")
    try:
        control = parse_control(text)
    except ValueError as e:
        raise LabError(f"reading {path.name}: {e}") from None
    return PackageEntry(tuple(control), filename, hash_file(path))


@dataclass(frozen=True)
class SigningKey:
    """A passphrase-less GPG key in its own GNUPGHOME (0700), used to sign Release files.

    Lab-only: a key without passphrase on disk is fine for throw-away test hosts, never for
    a repository anyone else trusts.
    """

    home: Path
    fingerprint: str

    @classmethod
    def ensure(cls, home: Path, *, uid: str = KEY_UID) -> SigningKey:
        """Open the key in `home`, generating it first when absent (safe against races)."""
        home = home.absolute()
        home.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(home.with_name(home.name + ".lock"), timeout=4 * COMMAND_TIMEOUT):
            fpr = _fingerprint(home)
            if fpr is None:
                _generate(home, uid)
                fpr = _fingerprint(home)
            if fpr is None:
                raise LabError(f"generating the apt signing key: no secret key in {home}")
        return cls(home, fpr)

    def _gpg(self, *args: str, step: str, input: bytes | None = None) -> bytes:
        with _agent(self.home):
            return _run(_gpg_argv(self.home, *args), step, input=input)

    def armored(self) -> bytes:
        """The public key, ASCII-armored (served as Release.key, like pkgs.k8s.io)."""
        return self._gpg("--armor", "--export", self.fingerprint, step="exporting the apt key")

    def keyring(self) -> bytes:
        """The public key as a binary keyring, what `signed-by=/etc/apt/keyrings/x.gpg` reads."""
        return self._gpg("--export", self.fingerprint, step="exporting the apt keyring")

    def sign(self, release: bytes) -> tuple[bytes, bytes]:
        """(InRelease, Release.gpg) for the given Release text."""
        with _agent(self.home):
            common = ["--local-user", self.fingerprint, "--digest-algo", "SHA512"]
            inrelease = _run(
                _gpg_argv(self.home, *common, "--clearsign"), "signing InRelease", input=release
            )
            detached = _run(
                _gpg_argv(self.home, *common, "--armor", "--detach-sign"),
                "signing Release.gpg",
                input=release,
            )
        return inrelease, detached


def _gpg_argv(home: Path, *args: str) -> list[str]:
    return [
        "gpg", "--batch", "--quiet", "--no-tty", "--homedir", str(home),
        "--pinentry-mode", "loopback", "--passphrase", "", *args,
    ]  # fmt: skip


@contextlib.contextmanager
def _agent(home: Path) -> Iterator[None]:
    """Stop the gpg-agent that gpg starts for `home` once done, so none is left running."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                capture_output=True, timeout=15, check=False,
            )  # fmt: skip


def _fingerprint(home: Path) -> str | None:
    if not (home / "pubring.kbx").is_file():
        return None
    with _agent(home):
        out = _run(
            _gpg_argv(home, "--with-colons", "--list-secret-keys"), "reading the apt signing key"
        ).decode()
    for line in out.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    return None


def _generate(home: Path, uid: str) -> None:
    """Generate into a temporary GNUPGHOME and rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=home.name + ".tmp-", dir=home.parent))
    try:
        tmp.chmod(0o700)
        with _agent(tmp):
            _run(
                _gpg_argv(tmp, "--quick-generate-key", uid, "ed25519", "sign", "never"),
                "generating the apt signing key",
            )
        shutil.rmtree(home, ignore_errors=True)
        tmp.rename(home)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _place(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _unique_debs(debs: Iterable[Path]) -> list[Path]:
    files = sorted({d.absolute() for d in debs})
    not_debs = [str(d) for d in files if d.suffix != ".deb"]
    if not_debs:
        raise LabError(f"not .deb files: {', '.join(not_debs)}")
    return files


def _read_all(files: Sequence[Path], prefix: str = "") -> dict[Path, PackageEntry]:
    """Index entries by source file, named by `pool_name`; the same .deb twice counts once."""
    by_name: dict[str, tuple[Path, PackageEntry]] = {}
    for deb in files:
        entry = read_deb(deb, filename="")
        entry = dataclasses.replace(entry, filename=prefix + pool_name(entry))
        seen = by_name.get(entry.filename)
        if seen is not None and seen[1].hashes != entry.hashes:
            raise LabError(f"two different .debs for {entry.filename}: {seen[0]} and {deb}")
        by_name.setdefault(entry.filename, (deb, entry))
    return dict(by_name.values())


@contextlib.contextmanager
def _swap_into(dest: Path) -> Iterator[Path]:
    """Yield an empty sibling directory; on success it replaces `dest`."""
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.monotonic_ns()}")
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sign_into(directory: Path, release: str, key: SigningKey) -> None:
    data = release.encode()
    inrelease, detached = key.sign(data)
    _write_bytes(directory / "Release", data)
    _write_bytes(directory / "InRelease", inrelease)
    _write_bytes(directory / "Release.gpg", detached)


def write_flat_repo(
    debs: Iterable[Path],
    dest: Path,
    key: SigningKey,
    *,
    architectures: Sequence[str] = ("amd64", "all"),
    origin: str = "homekube lab",
    date: datetime | None = None,
) -> Path:
    """Write a flat repository (`deb [signed-by=K] URL /`) of `debs` at `dest`; returns dest."""
    files = _unique_debs(debs)
    with _swap_into(dest) as tmp:
        entries = []
        for deb, entry in _read_all(files).items():
            _place(deb, tmp / entry.filename)
            entries.append(entry)
        packages = packages_text(entries).encode()
        gz = _gzip(packages)
        _write_bytes(tmp / "Packages", packages)
        _write_bytes(tmp / "Packages.gz", gz)
        release = release_text(
            {"Packages": hash_bytes(packages), "Packages.gz": hash_bytes(gz)},
            date=date or datetime.now(UTC),
            architectures=architectures,
            origin=origin,
            label=origin,
        )
        _sign_into(tmp, release, key)
        _write_bytes(tmp / "Release.key", key.armored())
    return dest


def write_dists_repo(
    debs: Iterable[Path],
    dest: Path,
    key: SigningKey,
    *,
    suite: str,
    component: str = "main",
    architecture: str = "amd64",
    origin: str = "homekube lab",
    date: datetime | None = None,
) -> Path:
    """Write a dists/ repository (`deb [signed-by=K] URL suite component`) at `dest`.

    One component and one architecture; `Architecture: all` packages are listed in its
    index, as apt expects.
    """
    files = _unique_debs(debs)
    with _swap_into(dest) as tmp:
        (tmp / "pool" / component).mkdir(parents=True)
        entries = []
        for deb, entry in _read_all(files, prefix=f"pool/{component}/").items():
            _place(deb, tmp / entry.filename)
            entries.append(entry)
        wrong = sorted(e.package for e in entries if e.architecture not in (architecture, "all"))
        if wrong:
            raise LabError(f"packages not for {architecture}: {', '.join(wrong)}")
        packages = packages_text(entries).encode()
        gz = _gzip(packages)
        dist = tmp / "dists" / suite
        index = f"{component}/binary-{architecture}"
        _write_bytes(dist / index / "Packages", packages)
        _write_bytes(dist / index / "Packages.gz", gz)
        release = release_text(
            {f"{index}/Packages": hash_bytes(packages), f"{index}/Packages.gz": hash_bytes(gz)},
            date=date or datetime.now(UTC),
            architectures=[architecture],
            suite=suite,
            codename=suite,
            components=[component],
            origin=origin,
            label=origin,
        )
        _sign_into(dist, release, key)
        _write_bytes(tmp / "Release.key", key.armored())
    return dest
