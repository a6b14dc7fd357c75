"""Push images to the lab registry over the Distribution (Docker Registry HTTP API v2).

Plain HTTP on the lab bridge, no auth. A blob the repository already has is skipped (HEAD);
a blob another repository of the registry has is mounted instead of uploaded; everything
else is a monolithic upload (POST, then PUT with the digest). The manifest goes last, by tag.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from homekube.lab.artifacts.oci import MANIFEST_TYPE, Blob, BlobStore, ImageRecord
from homekube.lab.system import LabError

TIMEOUT = 120.0


@dataclass(frozen=True)
class PushResult:
    ref: str
    uploaded: int  # blobs sent
    skipped: int  # blobs the registry had
    bytes_sent: int


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def _request(
    method: str, url: str, *, data: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    if not url.startswith("http://"):
        raise LabError(f"registry URL {url!r} is not plain HTTP")
    # S310: checked just above; every URL is built from Registry.base
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # type: ignore[arg-type]  # noqa: S310
    try:
        with _OPENER.open(req, timeout=TIMEOUT) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()
    except OSError as e:
        raise LabError(f"registry {url}: {e}") from e


def _check(status: int, body: bytes, what: str, ok: Iterable[int]) -> None:
    if status not in ok:
        raise LabError(f"registry: {what} failed (HTTP {status}): {body[:300].decode(errors='replace')}")


class Registry:
    def __init__(self, host: str) -> None:
        self.host = host
        self.base = f"http://{host}"

    def ping(self) -> bool:
        try:
            status, _, _ = _request("GET", f"{self.base}/v2/")
        except LabError:
            return False
        return status == 200

    def wait(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ping():
            if time.monotonic() > deadline:
                raise LabError(f"the lab registry at {self.host} does not answer /v2/")
            time.sleep(0.1)

    def has_blob(self, repo: str, digest: str) -> bool:
        status, _, _ = _request("HEAD", f"{self.base}/v2/{repo}/blobs/{digest}")
        return status == 200

    def manifest_digest(self, repo: str, tag: str) -> str | None:
        status, headers, _ = _request(
            "HEAD", f"{self.base}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_TYPE}
        )
        if status != 200:
            return None
        return {k.lower(): v for k, v in headers.items()}.get("docker-content-digest")

    def _upload(self, repo: str, blob: Blob, store: BlobStore, mount_from: str | None) -> bool:
        """Upload (or mount) one blob; True when bytes were sent."""
        url = f"{self.base}/v2/{repo}/blobs/uploads/"
        if mount_from:
            q = urllib.parse.urlencode({"mount": blob.digest, "from": mount_from})
            status, headers, body = _request("POST", f"{url}?{q}", data=b"")
            if status == 201:
                return False
        else:
            status, headers, body = _request("POST", url, data=b"")
        _check(status, body, f"starting the upload of {blob.digest} to {repo}", (202,))
        location = {k.lower(): v for k, v in headers.items()}.get("location", "")
        location = urllib.parse.urljoin(self.base + "/", location)
        sep = "&" if "?" in location else "?"
        target = f"{location}{sep}{urllib.parse.urlencode({'digest': blob.digest})}"
        with store.path(blob.digest).open("rb") as fh:
            status, _, body = _request(
                "PUT",
                target,
                data=fh,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
            )
        _check(status, body, f"uploading {blob.digest} to {repo}", (201,))
        return True

    def push(
        self, store: BlobStore, image: ImageRecord, repo: str, tag: str, *, mount_from: str | None = None
    ) -> PushResult:
        """Push an image's blobs (skipping those present) and then its manifest under tag."""
        uploaded = skipped = sent = 0
        for blob in (*image.layers, image.config):
            if self.has_blob(repo, blob.digest):
                skipped += 1
                continue
            if self._upload(repo, blob, store, mount_from):
                uploaded += 1
                sent += blob.size
            else:
                skipped += 1
        if self.manifest_digest(repo, tag) != image.manifest_digest:
            manifest = store.path(image.manifest_digest).read_bytes()
            status, _, body = _request(
                "PUT",
                f"{self.base}/v2/{repo}/manifests/{tag}",
                data=manifest,
                headers={"Content-Type": MANIFEST_TYPE},
            )
            _check(status, body, f"putting the manifest of {repo}:{tag}", (201,))
        return PushResult(f"{self.host}/{repo}:{tag}", uploaded, skipped, sent)
