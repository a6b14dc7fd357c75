"""OCI images written in Python: gzip'd tar layers, a config, a manifest, in a blob store.

Layers are reproducible (fixed mtimes, root owners unless a rootfs says otherwise, sorted
entries, gzip header without a timestamp), and config and manifest are canonical JSON, so an
image's digest depends on its content only. A layer's digest is the sha256 of the gzip'd
bytes, its diff_id that of the plain tar (the config lists diff_ids, the manifest digests).

    store = BlobStore(path)
    layer = store.add_layer(lambda tar: add_files(tar, [LayerFile("pause", src)]))
    image = store.add_image([layer], ImageConfig(entrypoint=("/pause",)))
    image.manifest_digest, image.blobs        # what a registry push needs
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from homekube.lab.artifacts.tarballs import MTIME

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CREATED = "2026-11-26T00:00:00Z"  # the same instant as tarballs.MTIME
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """A layer or config blob: registry digest, size and (layers only) uncompressed diff_id."""

    digest: str
    size: int
    media_type: str
    diff_id: str | None = None

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    working_dir: str = "/"
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Image:
    manifest: bytes
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (*self.layers, self.config)


def config_json(layers: Sequence[Blob], cfg: ImageConfig, history: Sequence[str] = ()) -> bytes:
    """The image config (application/vnd.oci.image.config.v1+json), canonical."""
    inner: dict[str, object] = {"Env": list(cfg.env), "WorkingDir": cfg.working_dir}
    if cfg.entrypoint:
        inner["Entrypoint"] = list(cfg.entrypoint)
    if cfg.cmd:
        inner["Cmd"] = list(cfg.cmd)
    if cfg.labels:
        inner["Labels"] = dict(cfg.labels)
    doc: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    if history:
        doc["history"] = [{"created": CREATED, "created_by": h} for h in history]
    return canonical_json(doc)


def manifest_json(config: Blob, layers: Sequence[Blob], annotations: dict[str, str] | None = None) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return canonical_json(doc)


# ------------------------------------------------------------------------------- layers


class _Hashing:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, inner: BinaryIO | gzip.GzipFile) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


@dataclass(frozen=True)
class LayerFile:
    """A regular file in a layer, copied from source (path without a leading /)."""

    path: str
    source: Path
    mode: int = 0o755


def _dir_info(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name.rstrip("/") + "/")
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.mtime = MTIME
    ti.uname = ti.gname = "root"
    return ti


def add_files(tar: tarfile.TarFile, files: Sequence[LayerFile], dirs: Sequence[tuple[str, int]] = ()) -> None:
    """Add files (and their parent directories, 0755 root) in sorted order; dirs: extra (path, mode)."""
    wanted: dict[str, int] = {d.strip("/"): mode for d, mode in dirs}
    for f in files:
        parts = f.path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            wanted.setdefault("/".join(parts[:i]), 0o755)
    entries: list[tuple[str, LayerFile | int]] = [(d, m) for d, m in wanted.items()]
    entries += [(f.path.strip("/"), f) for f in files]
    for name, what in sorted(entries, key=lambda e: e[0]):
        if isinstance(what, int):
            tar.addfile(_dir_info(name, what))
            continue
        ti = tarfile.TarInfo(name)
        ti.mode = what.mode
        ti.mtime = MTIME
        ti.uname = ti.gname = "root"
        ti.size = what.source.stat().st_size
        with what.source.open("rb") as fh:
            tar.addfile(ti, fh)


class BlobStore:
    """Content-addressed blobs on disk (the layout of an OCI image layout's blobs/ dir)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return self.root / "blobs" / algo / hexd

    def has(self, blob: Blob) -> bool:
        p = self.path(blob.digest)
        return p.is_file() and p.stat().st_size == blob.size

    def add_bytes(self, data: bytes, media_type: str) -> Blob:
        blob = Blob(sha256_digest(data), len(data), media_type)
        p = self.path(blob.digest)
        if not self.has(blob):
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(p)
        return blob

    def add_layer(self, fill: Callable[[tarfile.TarFile], None], *, level: int = 6) -> Blob:
        """Write a gzip'd tar layer that `fill` populates; returns its blob (with diff_id)."""
        d = self.root / "blobs" / "sha256"
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".layer.tmp-{os.getpid()}"
        with tmp.open("wb") as raw:
            packed = _Hashing(raw)
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=level
            ) as gz:
                plain = _Hashing(gz)
                # the tar stream only ever writes: _Hashing is all the file it needs
                with tarfile.open(  # type: ignore[call-overload]
                    fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT
                ) as tar:
                    fill(tar)
        blob = Blob(
            "sha256:" + packed.hash.hexdigest(),
            packed.size,
            LAYER_TYPE,
            diff_id="sha256:" + plain.hash.hexdigest(),
        )
        tmp.replace(self.path(blob.digest))
        return blob

    def add_image(
        self,
        layers: Sequence[Blob],
        cfg: ImageConfig,
        *,
        history: Sequence[str] = (),
        annotations: dict[str, str] | None = None,
    ) -> Image:
        config = self.add_bytes(config_json(layers, cfg, history), CONFIG_TYPE)
        manifest = manifest_json(config, layers, annotations)
        self.add_bytes(manifest, MANIFEST_TYPE)
        return Image(manifest=manifest, config=config, layers=tuple(layers))


@dataclass(frozen=True)
class ImageRecord:
    """What is kept about a built image so it need not be rebuilt: its blobs and manifest."""

    manifest_digest: str
    config: Blob
    layers: tuple[Blob, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        def b(x: Blob) -> dict[str, object]:
            return {"digest": x.digest, "size": x.size, "mediaType": x.media_type, "diffId": x.diff_id}

        return json.dumps(
            {"manifest": self.manifest_digest, "config": b(self.config), "layers": [b(x) for x in self.layers]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> ImageRecord:
        data = json.loads(text)

        def b(x: dict[str, object]) -> Blob:
            diff = x.get("diffId")
            return Blob(str(x["digest"]), int(str(x["size"])), str(x["mediaType"]), str(diff) if diff else None)

        return cls(str(data["manifest"]), b(data["config"]), tuple(b(x) for x in data["layers"]))
