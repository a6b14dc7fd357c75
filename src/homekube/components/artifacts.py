"""Where release artifacts come from: upstream, or the user's mirror (`artifacts.mirror`).

Mirror layout (documented in README), one directory per release with a `SHA256SUMS` beside
the files, so a mirror can be filled with `curl -O` of the upstream files and one
`sha256sum * > SHA256SUMS`:

    <mirror>etcd/v<X.Y.Z>/etcd-v<X.Y.Z>-linux-<arch>.tar.gz        (upstream ships SHA256SUMS)
    <mirror>containerd/v<X.Y.Z>/containerd-<X.Y.Z>-linux-<arch>.tar.gz
    <mirror>runc/v<X.Y.Z>/runc.<arch>

Upstream, containerd publishes `<file>.sha256sum` beside each tarball and runc one
`runc.sha256sum` for all its binaries; those are used when there is no mirror and no pin.
"""

from __future__ import annotations

from dataclasses import dataclass

from homekube.config.model import ClusterConfig

UPSTREAM_ETCD = "https://github.com/etcd-io/etcd/releases/download/"
UPSTREAM_CONTAINERD = "https://github.com/containerd/containerd/releases/download/"
UPSTREAM_RUNC = "https://github.com/opencontainers/runc/releases/download/"

#: SHA-256 of upstream etcd release tarballs homekube knows. Versions missing here are
#: checked against `etcd.sha256` from cluster.yaml, or against the SHA256SUMS file published
#: next to the tarball (weaker: same origin as the tarball).
KNOWN_ETCD_SHA256: dict[tuple[str, str], str] = {}

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Artifact:
    """A release file: where from, the checksum file beside it, and a pin when there is one.

    With neither `sha256` nor `sums_url` the download relies on TLS and an immutable release
    tag (Calico manifests from raw.githubusercontent.com).
    """

    url: str
    sums_url: str | None
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


def containerd_tarball(cfg: ClusterConfig, machine: str) -> Artifact:
    v = cfg.kubernetes.containerd.version
    name = f"containerd-{v}-linux-{ARCH.get(machine, machine)}.tar.gz"
    if cfg.artifacts.mirror:
        base = f"{cfg.artifacts.mirror}containerd/v{v}/"
        return Artifact(base + name, base + "SHA256SUMS", name, cfg.kubernetes.containerd.sha256)
    base = f"{UPSTREAM_CONTAINERD}v{v}/"
    return Artifact(base + name, base + name + ".sha256sum", name, cfg.kubernetes.containerd.sha256)


def runc_binary(cfg: ClusterConfig, machine: str) -> Artifact:
    v = cfg.kubernetes.containerd.runc_version
    name = f"runc.{ARCH.get(machine, machine)}"
    if cfg.artifacts.mirror:
        base = f"{cfg.artifacts.mirror}runc/v{v}/"
        sums = base + "SHA256SUMS"
    else:
        base = f"{UPSTREAM_RUNC}v{v}/"
        sums = base + "runc.sha256sum"
    return Artifact(base + name, sums, name, cfg.kubernetes.containerd.runc_sha256)
