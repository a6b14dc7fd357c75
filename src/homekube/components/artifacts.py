"""Where release artifacts come from: upstream, or the user's mirror (`artifacts.mirror`).

Mirror layout (documented in README): `<mirror>/etcd/v<X.Y.Z>/etcd-v<X.Y.Z>-linux-<arch>.tar.gz`
plus `SHA256SUMS` beside it, exactly like upstream's release directory, so a mirror can be
filled with `curl -O` of the upstream files.
"""

from __future__ import annotations

from dataclasses import dataclass

from homekube.config.model import ClusterConfig

UPSTREAM_ETCD = "https://github.com/etcd-io/etcd/releases/download/"

#: SHA-256 of upstream etcd release tarballs homekube knows. Versions missing here are
#: checked against `etcd.sha256` from cluster.yaml, or against the SHA256SUMS file published
#: next to the tarball (weaker: same origin as the tarball).
KNOWN_ETCD_SHA256: dict[tuple[str, str], str] = {}

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Artifact:
    url: str
    sums_url: str
    filename: str
    sha256: str | None


def known_etcd_sha256(version: str, arch: str = "amd64") -> str | None:
    return KNOWN_ETCD_SHA256.get((version, arch))


def etcd_tarball(cfg: ClusterConfig, machine: str) -> Artifact:
    v = cfg.etcd_version
    arch = ARCH.get(machine, machine)
    name = f"etcd-v{v}-linux-{arch}.tar.gz"
    base = f"{cfg.artifacts.mirror}etcd/v{v}/" if cfg.artifacts.mirror else f"{UPSTREAM_ETCD}v{v}/"
    sha = cfg.etcd.sha256 or known_etcd_sha256(v, arch)
    return Artifact(base + name, base + "SHA256SUMS", name, sha)
