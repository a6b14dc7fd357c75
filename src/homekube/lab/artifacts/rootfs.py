"""The base layer of images that need netfilter tools: a small Debian root, as one OCI layer.

kube-proxy runs iptables/nft/conntrack, flannel iptables/nft, and flannel's CNI init
container `cp`; upstream builds them on distroless-iptables and Alpine. The lab uses
`debootstrap --variant=minbase` of bookworm with those packages, trimmed of documentation,
apt lists and caches, then packed as a reproducible tar layer (entries sorted, fixed mtimes;
owners and modes as debootstrap made them). Built once per package list and kept as a blob.

Debian's iptables defaults to the nft backend, the backend of the lab's Debian hosts too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import time
from pathlib import Path

from homekube.lab import settings
from homekube.lab.artifacts.gobuild import Progress
from homekube.lab.artifacts.oci import Blob, BlobStore
from homekube.lab.artifacts.tarballs import MTIME
from homekube.lab.image import apt_sources, remove_tree
from homekube.lab.system import LabError, ensure_packages, log_tail, run_long

PACKAGES = ("iptables", "nftables", "conntrack")
FORMAT = 2
#: removed after debootstrap: nothing in a container reads them (and ldconfig's aux-cache,
#: the one file that differs between two debootstraps of the same archive state)
TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/cache/debconf",
    "var/cache/ldconfig/aux-cache",
    "var/lib/apt/lists",
    "var/log",
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
)
#: recreated empty (the runtime mounts over most of them)
EMPTY_DIRS = (("dev", 0o755), ("proc", 0o555), ("sys", 0o555), ("run", 0o755), ("tmp", 0o1777),
              ("var/log", 0o755), ("var/cache/apt", 0o755), ("var/lib/apt/lists", 0o755))  # fmt: skip


def key() -> str:
    blob = json.dumps({"format": FORMAT, "suite": settings.SUITE, "packages": PACKAGES}).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _record(store: BlobStore) -> Path:
    return store.root / "rootfs" / f"debian-{settings.SUITE}-{key()}.json"


def add_tree(tar: tarfile.TarFile, root: Path) -> None:
    """Add every entry under root, sorted, with fixed mtimes; hard links stay hard links."""
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for n in (*dirnames, *filenames):
            entries.append(n if rel == "." else f"{rel}/{n}")
    for d, _mode in EMPTY_DIRS:
        if not (root / d).exists():
            entries.append(d)
    for name in sorted(set(entries)):
        path = root / name
        if not path.exists() and not path.is_symlink():
            ti = tarfile.TarInfo(name + "/")
            ti.type = tarfile.DIRTYPE
            ti.mode = dict(EMPTY_DIRS)[name]
            ti.mtime = MTIME
            ti.uname = ti.gname = "root"
            tar.addfile(ti)
            continue
        ti = tar.gettarinfo(str(path), arcname=name)
        ti.mtime = MTIME
        if ti.isdev():
            continue
        if ti.isreg():
            with path.open("rb") as fh:
                tar.addfile(ti, fh)
        else:
            tar.addfile(ti)


def _trim(root: Path) -> None:
    for rel in TRIM:
        p = root / rel
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
    for d, mode in EMPTY_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d).chmod(mode)
    # setuid/setgid bits have no business in a kube-proxy image
    for dirpath, _dirs, files in os.walk(root):
        for n in files:
            p = Path(dirpath, n)
            st = p.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                p.chmod(st.st_mode & ~(stat.S_ISUID | stat.S_ISGID))


def ensure_base_layer(store: BlobStore, work: Path, progress: Progress) -> Blob:
    """The Debian base layer's blob, debootstrapping it first when the store lacks it."""
    rec = _record(store)
    try:
        data = json.loads(rec.read_text())
        blob = Blob(data["digest"], int(data["size"]), data["mediaType"], data["diffId"])
        if store.has(blob):
            return blob
    except (OSError, ValueError, KeyError):
        pass
    ensure_packages(("debootstrap",), "the images' Debian base layer")
    tree = work / f"rootfs-{key()}.tmp-{os.getpid()}"
    remove_tree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    log_path = work / f"rootfs-{key()}.log"
    progress(f"debootstrap {settings.SUITE} minbase + {', '.join(PACKAGES)} (image base layer)")
    t0 = time.monotonic()
    try:
        run_long(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                settings.SUITE, str(tree), apt_sources().debian,
            ],
            what="debootstrap of the image base layer",
            log_path=log_path,
            timeout=1800,
        )  # fmt: skip
        _trim(tree)
        blob = store.add_layer(lambda tar: add_tree(tar, tree))
    except LabError:
        raise
    except OSError as e:
        raise LabError(f"packing the image base layer failed: {e}\n{log_tail(log_path)}") from e
    finally:
        remove_tree(tree)  # never rmtree through a /proc debootstrap left mounted
    rec.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "digest": blob.digest,
        "size": blob.size,
        "mediaType": blob.media_type,
        "diffId": blob.diff_id,
        "packages": PACKAGES,
        "seconds": round(time.monotonic() - t0, 1),
    }
    rec.write_text(json.dumps(record, indent=1) + "\n")
    progress(f"image base layer: {blob.size / 2**20:.0f} MiB in {time.monotonic() - t0:.0f} s")
    return blob
