"""Reset's footprint covers every file homekube writes; render shows what apply writes (pure).

`reset` and node removal take a host back to what it was by removing the footprint listed in
components/reset.py. A phase that starts writing a new file must add it there, or a reset host
keeps it. These tests catch that drift: every file `render` produces and every file a plan for
fresh hosts writes lies inside the footprint, for each runtime and CNI. And `render` goes
through the planners' own renderers: on fresh hosts it shows byte for byte what `apply` would
write, secrets (kubeadm's token and CA hash) replaced by placeholders.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime

import pytest

from homekube.components.base import Context, LocalState
from homekube.components.registry import all_phases, rendered_files
from homekube.components.reset import CONTAINERD_FOOTPRINT, footprint_paths
from homekube.config.loader import load_text
from homekube.config.model import ClusterConfig
from homekube.plan.model import Change, WriteFile
from tests.conftest import GOOD
from tests.unit.factsgen import debian12

VARIANTS = {
    "cri-o + calico": "",
    "containerd + flannel": "  runtime: containerd\n",
}


def config(extra: str) -> ClusterConfig:
    text = GOOD.replace('kubernetes: {version: "1.36", controlPlaneEndpoint: "k8s.home.arpa:6443"}',
                        'kubernetes:\n  version: "1.36"\n  controlPlaneEndpoint: "k8s.home.arpa:6443"\n'
                        + extra)
    if "containerd" in extra:
        text = text.replace("network:\n", "network:\n  cni: flannel\n")
    return load_text(text)


def covered(cfg: ClusterConfig, path: str) -> bool:
    roots = (*footprint_paths(cfg), *CONTAINERD_FOOTPRINT)
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rendered_file_is_in_the_footprint(variant: str) -> None:
    cfg = config(VARIANTS[variant])
    paths = {path for _, path, _, _ in rendered_files(cfg)}
    assert paths, "render produced nothing: the test would prove nothing"
    assert sorted(p for p in paths if not covered(cfg, p)) == []


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_file_a_fresh_plan_writes_is_in_the_footprint(variant: str) -> None:
    cfg = config(VARIANTS[variant])
    written = set(fresh_plan_writes(cfg))
    assert len(written) >= 5, written
    assert sorted(p for _, p in written if not covered(cfg, p)) == []


def fresh_plan_writes(cfg: ClusterConfig) -> dict[tuple[str, str], bytes]:
    """(host, path) -> content of every file the plan for fresh Debian 12 hosts writes."""
    facts = {h.name: debian12(h.name, v4=str(h.address), v6=str(h.ipv6) if h.ipv6 else None)
             for h in cfg.hosts}
    ctx = Context(cfg, facts, LocalState(), datetime(2026, 11, 27, tzinfo=UTC))
    return {(s.host, a.path): a.content for ph in all_phases() for s in ph.plan(ctx)
            if isinstance(s, Change) for a in s.actions if isinstance(a, WriteFile)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_render_shows_what_apply_writes(variant: str) -> None:
    cfg = config(VARIANTS[variant])
    planned = fresh_plan_writes(cfg)
    compared = 0
    for host, path, content, secret in rendered_files(cfg):
        if path.startswith("/etc/yum.repos.d/"):
            continue  # render shows both OS families; the fresh hosts here are Debian
        assert (host, path) in planned, f"render shows {path} on {host}, which apply does not write"
        if secret:
            continue
        diff = [ln for ln in difflib.unified_diff(content.decode().splitlines(),
                                                  planned[host, path].decode().splitlines(),
                                                  lineterm="", n=0)
                if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        # only the secrets kubeadm's files carry may differ: render has placeholders there
        assert all("token:" in ln or "sha256:" in ln for ln in diff), (path, diff)
        compared += 1
    assert compared >= 10
