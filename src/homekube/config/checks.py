"""Checks of the Kubernetes-layer settings that span several sections, and `caFile` reading.

The loader calls both after the schema passed, so every finding is located (file:line:col)
like its own semantic checks. Reading `artifacts.registries[].caFile` happens here, at load
time, because it is a file on the operator's machine: the planners and renderers stay pure and
only ever see the certificate text.
"""

from __future__ import annotations

from pathlib import Path

from homekube.config.model import FLANNEL_NODE_PREFIX, ClusterConfig, pem_certificates

Loc = tuple[str | int, ...]

__all__ = ["feature_checks", "read_ca_files"]


def feature_checks(cfg: ClusterConfig) -> list[tuple[Loc, str, bool]]:
    """Cross-section checks; each result is (location, message, is_warning)."""
    out: list[tuple[Loc, str, bool]] = []
    k8s = cfg.kubernetes
    if not k8s.enabled:
        return out
    nodes = sum(1 for h in cfg.hosts if h.has("control-plane") or h.has("worker"))
    if cfg.network.cni == "flannel":
        for i, pod in enumerate(cfg.network.pods):
            node = FLANNEL_NODE_PREFIX[pod.version]
            blocks = 2 ** (node - pod.prefixlen)
            if blocks < nodes:
                out.append((("network", "pods", i),
                            f"{pod} holds {blocks} node network(s) of /{node} but the cluster "
                            f"has {nodes} nodes: use a larger pod network", False))
    if k8s.allow_cgroup_v1 and cfg.host_prep.swap == "allowed":
        out.append((("hostPrep", "swap"),
                    "LimitedSwap needs cgroup v2: the kubelet supports swap only there, so on a "
                    "cgroup v1 host swap stays unmanaged", True))
    if k8s.allow_cgroup_v1 and k8s.runtime == "cri-o":
        out.append((("kubernetes", "allowCgroupV1"),
                    "cri-o no longer tests cgroup v1; containerd still supports it", True))
    return out


def read_ca_files(cfg: ClusterConfig, base: Path) -> tuple[ClusterConfig, list[tuple[Loc, str]]]:
    """Put the content of every `registries[].caFile` into `ca` (paths relative to `base`).

    Returns the config with the certificates inlined, and the problems found (location,
    message); the config is returned unchanged when there is nothing to read.
    """
    regs = list(cfg.artifacts.registries)
    problems: list[tuple[Loc, str]] = []
    changed = False
    for i, r in enumerate(regs):
        if r.ca_file is None:
            continue
        loc: Loc = ("artifacts", "registries", i, "caFile")
        path = Path(r.ca_file).expanduser()
        if not path.is_absolute():
            path = base / path
        try:
            text = pem_certificates(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append((loc, f"{path}: file not found"))
            continue
        except (OSError, UnicodeDecodeError) as e:
            problems.append((loc, f"{path}: cannot read: {e}"))
            continue
        except ValueError as e:
            problems.append((loc, f"{path} {e}"))
            continue
        regs[i] = r.model_copy(update={"ca": text, "ca_file": None})
        changed = True
    if not changed:
        return cfg, problems
    artifacts = cfg.artifacts.model_copy(update={"registries": tuple(regs)})
    return cfg.model_copy(update={"artifacts": artifacts}), problems
