"""Release files laid out like the upstream download sites, byte-for-byte reproducible.

    etcd/v3.6.14/etcd-v3.6.14-linux-amd64.tar.gz           (github.com/etcd-io/etcd releases)
    containerd/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz  (github.com/containerd/containerd)
    runc/v1.5.2/runc.amd64                                 (github.com/opencontainers/runc)
    cni-plugins/v1.9.1/cni-plugins-linux-amd64-v1.9.1.tgz  (github.com/containernetworking/plugins)

Each directory also holds SHA256SUMS (`<sha256>  <file>` lines), plus the checksum file the
upstream project itself publishes beside the asset, so either way of verifying works.
Fixed mtimes, owners and gzip headers make the sha256 depend on the binaries alone.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Any fixed value makes archives reproducible; this one is the lab's first build day.
MTIME = 1795651200  # 2026-11-26T00:00:00Z


@dataclass(frozen=True)
class Member:
    """One archive member: a directory (source None) or a file copied from source."""

    name: str
    source: Path | None = None
    mode: int = 0o755


@dataclass(frozen=True)
class ReleaseFile:
    """A file in the mirror: its path below the mirror root and its sha256."""

    rel_path: str
    sha256: str

    @property
    def name(self) -> str:
        return self.rel_path.rsplit("/", 1)[-1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tarinfo(
    name: str, *, size: int = 0, directory: bool = False, mode: int = 0o755, mtime: int = MTIME
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    ti.mode = mode
    ti.size = size
    ti.mtime = mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def write_tar_gz(
    dest: Path, members: Sequence[Member], *, level: int = 6, mtime: int = MTIME
) -> str:
    """Write a reproducible .tar.gz (atomically); returns its sha256."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for m in members:
            if m.source is None:
                tar.addfile(tarinfo(m.name, directory=True, mode=m.mode, mtime=mtime))
                continue
            with m.source.open("rb") as fh:
                ti = tarinfo(m.name, size=m.source.stat().st_size, mode=m.mode, mtime=mtime)
                tar.addfile(ti, fh)
    tmp.replace(dest)
    return sha256_file(dest)


def copy_file(src: Path, dest: Path, mode: int = 0o755) -> str:
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, tmp)
    tmp.chmod(mode)
    os.utime(tmp, (MTIME, MTIME))
    tmp.replace(dest)
    return sha256_file(dest)


def write_sums(directory: Path, files: Sequence[tuple[str, str]]) -> None:
    """SHA256SUMS in `sha256sum` format: `<sha256>  <name>` per line, sorted by name."""
    lines = [f"{sha}  {name}\n" for name, sha in sorted(files)]
    (directory / "SHA256SUMS").write_text("".join(lines))


# ------------------------------------------------------------------------------ releases


def etcd_release(bin_dir: Path, version: str, out: Path) -> ReleaseFile:
    top = f"etcd-v{version}-linux-amd64"
    name = f"{top}.tar.gz"
    d = out / "etcd" / f"v{version}"
    members = [Member(f"{top}/")] + [
        Member(f"{top}/{b}", bin_dir / b) for b in ("etcd", "etcdctl", "etcdutl")
    ]
    sha = write_tar_gz(d / name, members)
    write_sums(d, [(name, sha)])
    return ReleaseFile(f"etcd/v{version}/{name}", sha)


def containerd_release(bin_dir: Path, version: str, out: Path) -> ReleaseFile:
    name = f"containerd-{version}-linux-amd64.tar.gz"
    d = out / "containerd" / f"v{version}"
    members = [Member("bin/")] + [
        Member(f"bin/{b}", bin_dir / b) for b in ("containerd", "containerd-shim-runc-v2", "ctr")
    ]
    sha = write_tar_gz(d / name, members)
    write_sums(d, [(name, sha)])
    # containerd publishes <asset>.sha256sum beside each asset
    (d / f"{name}.sha256sum").write_text(f"{sha}  {name}\n")
    return ReleaseFile(f"containerd/v{version}/{name}", sha)


def runc_release(bin_dir: Path, version: str, out: Path) -> ReleaseFile:
    d = out / "runc" / f"v{version}"
    sha = copy_file(bin_dir / "runc", d / "runc.amd64")
    write_sums(d, [("runc.amd64", sha)])
    # runc publishes one runc.sha256sum listing its assets
    (d / "runc.sha256sum").write_text(f"{sha}  runc.amd64\n")
    return ReleaseFile(f"runc/v{version}/runc.amd64", sha)


def cni_release(bin_dir: Path, plugins: Sequence[str], version: str, out: Path) -> ReleaseFile:
    name = f"cni-plugins-linux-amd64-v{version}.tgz"
    d = out / "cni-plugins" / f"v{version}"
    members = [Member("./")] + [Member(f"./{p}", bin_dir / p) for p in sorted(plugins)]
    sha = write_tar_gz(d / name, members)
    write_sums(d, [(name, sha)])
    (d / f"{name}.sha256").write_text(f"{sha}  {name}\n")
    return ReleaseFile(f"cni-plugins/v{version}/{name}", sha)
