"""`homekube render`: every file for every host, written locally for review and GitOps."""

from __future__ import annotations

from pathlib import Path

from homekube.components.registry import rendered_files
from homekube.config.model import ClusterConfig
from homekube.ops.kubernetes import write_cluster_objects

REDACTED = b"<redacted: secret material is generated at apply time>\n"


def render_all(cfg: ClusterConfig, out: Path) -> int:
    """Write DIR/<host>/<absolute path> and DIR/cluster/<objects>; return the file count."""
    n = 0
    for host, path, content, secret in rendered_files(cfg):
        target = out / host / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(REDACTED if secret else content)
        n += 1
    n += write_cluster_objects(cfg, out)
    return n
