"""Lab artifacts: Kubernetes, etcd, containerd, runc, CNI and flannel built from Go modules.

    arts = ensure(progress)          # build + pack what is missing, publish into the lab
    arts.apt_repo_url, arts.apt_key_url, arts.etcd_sha256, arts.image_repository, ...

Built binaries are cached in /var/cache/homekube/lab-artifacts (HOMEKUBE_ARTIFACTS_DIR), Go's
caches in /var/cache/homekube/go (HOMEKUBE_GO_CACHE). See recipes.py for what is built and
pipeline.py for how it is packed and published. Imports are lazy: mirror.py uses tarballs
without pulling in the whole pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from homekube.lab.artifacts.pipeline import (
        LabArtifacts,
        Report,
        component_names,
        describe,
        ensure,
        minors_for,
        run,
    )

__all__ = [
    "LabArtifacts", "Report", "component_names", "describe", "ensure", "minors_for", "run",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from homekube.lab.artifacts import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
