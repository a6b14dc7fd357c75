"""Where every container image homekube deploys comes from (`artifacts.imageRepository`).

One rule, so an air-gapped registry can be filled mechanically: an image keeps its path and
tag and only the registry host is replaced — ``ghcr.io/flannel-io/flannel:v0.28.10`` becomes
``<repo>/flannel-io/flannel:v0.28.10``. kubeadm applies its own rule to what it deploys
(``imageRepository``): ``<repo>/kube-apiserver``, ``<repo>/pause``, and CoreDNS as
``<repo>/coredns`` (not ``coredns/coredns``) once the repository is not the default one.
Calico's operator builds ``<registry><imagePath>/<name>``; with ``registry: <repo>/`` and the
default path ``calico`` that is ``<repo>/calico/node``, the same rule again.
"""

from __future__ import annotations

from homekube.config.model import ClusterConfig

__all__ = ["DEFAULT_K8S_REGISTRY", "image", "pause_image", "upstream_path"]

DEFAULT_K8S_REGISTRY = "registry.k8s.io"
"""kubeadm's default ``imageRepository``."""


def upstream_path(ref: str) -> str:
    """The image reference without its registry host (``ghcr.io/a/b:1`` → ``a/b:1``)."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return ref if sep else f"library/{ref}"


def image(cfg: ClusterConfig, ref: str) -> str:
    """`ref` as pulled in this cluster: unchanged, or from `artifacts.imageRepository`."""
    repo = cfg.artifacts.image_repository
    return f"{repo}/{upstream_path(ref)}" if repo else ref


def pause_image(cfg: ClusterConfig, version: str) -> str:
    """kubeadm's pause image: ``<imageRepository>/pause:<version>``."""
    return f"{cfg.artifacts.image_repository or DEFAULT_K8S_REGISTRY}/pause:{version}"
