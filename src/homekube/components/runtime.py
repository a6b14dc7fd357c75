"""The container runtime on each node, as steps of the k8s-packages phase (pure).

cri-o comes from its per-minor package repository (see :mod:`homekube.components.kubernetes`);
containerd is installed the way containerd documents for every distribution, because the
distro packages are too old for Kubernetes 1.36 (Debian 12: 1.6; Kubernetes 1.36 wants 2.2+):

* ``containerd-<V>-linux-<arch>.tar.gz`` → ``/usr/local/bin/{containerd,containerd-shim-runc-v2,ctr}``,
* ``runc.<arch>`` → ``/usr/local/sbin/runc``,
* both verified by SHA-256 (:mod:`homekube.components.downloads`) and stamped, so the facts
  read their versions without starting them,
* ``/etc/containerd/config.toml`` and the unit rendered by homekube (:mod:`homekube.render.runtime`),
* the CNI plugins from the ``kubernetes-cni`` package of the Kubernetes repository.

Registry files (containerd ``certs.d/<host>/hosts.toml`` or cri-o's registries.conf.d drop-in,
plus CA certificates) are written for either runtime.

Validated, not executed here: no containerd ran on the machine this was written on.
"""

from __future__ import annotations

from homekube.components.artifacts import Artifact, containerd_tarball, runc_binary
from homekube.components.downloads import (
    STAMP_DIR,
    TEMP_DIR,
    fetch_verified,
    install_binaries,
    stamp_lines,
    stamped_version,
)
from homekube.config.model import ClusterConfig
from homekube.facts.host import HostFacts
from homekube.plan.model import Change, NoChange, Run, Step, WriteFile
from homekube.plan.resources import file_step, unit_step
from homekube.render.runtime import (
    CONTAINERD_BIN_DIR,
    CONTAINERD_BINARIES,
    CONTAINERD_CONFIG,
    CONTAINERD_UNIT,
    CRIO_REGISTRIES,
    RUNC_PATH,
    containerd_config,
    containerd_unit,
    registry_files,
)
from homekube.shell import install_dir

__all__ = [
    "CONTAINERD_STAMP",
    "RUNC_STAMP",
    "containerd_artifacts",
    "containerd_steps",
    "registry_steps",
    "runtime_fact_lines",
    "runtime_files",
]

CONTAINERD_STAMP = f"{STAMP_DIR}/containerd-binary"
RUNC_STAMP = f"{STAMP_DIR}/runc-binary"


def runtime_fact_lines(cfg: ClusterConfig) -> list[str]:
    """Facts snippet lines: ``containerd=<v>`` and ``runc=<v>`` of the binaries homekube installs."""
    if cfg.kubernetes.runtime != "containerd":
        return []
    return [
        # "containerd github.com/containerd/containerd/v2 v2.3.4 <commit>"
        stamped_version("containerd", f"{CONTAINERD_BIN_DIR}/containerd", CONTAINERD_STAMP,
                        "\"$b\" --version | awk '{print $3}'"),
        # "runc version 1.4.3" (then commit, spec, go lines)
        stamped_version("runc", RUNC_PATH, RUNC_STAMP, "\"$b\" --version | awk 'NR==1{print $3}'"),
    ]


def runtime_files(cfg: ClusterConfig, pause_version: str) -> list[tuple[str, bytes]]:
    """containerd's config and unit (empty for cri-o, whose drop-in lives with its package)."""
    if cfg.kubernetes.runtime != "containerd":
        return []
    return [(CONTAINERD_CONFIG, containerd_config(cfg, pause_version).encode()),
            (CONTAINERD_UNIT, containerd_unit(cfg).encode())]


def containerd_artifacts(cfg: ClusterConfig, f: HostFacts, have: dict[str, str | None]) -> list[Artifact]:
    """The downloads this host still needs (containerd tarball, runc), given installed versions."""
    c = cfg.kubernetes.containerd
    out = []
    if have.get("containerd") != c.version:
        out.append(containerd_tarball(cfg, f.arch))
    if have.get("runc") != c.runc_version:
        out.append(runc_binary(cfg, f.arch))
    return out


def _source(cfg: ClusterConfig, a: Artifact) -> str:
    where = "the mirror" if cfg.artifacts.mirror else "upstream"
    how = "pinned SHA-256" if a.sha256 else (
        "its SHA256SUMS" if cfg.artifacts.mirror else "the checksum file published beside it")
    return f"release binaries from {where}, checked against {how}"


def containerd_steps(cfg: ClusterConfig, f: HostFacts, phase: str, have: dict[str, str | None],
                     pause_version: str) -> list[Step]:
    """Binaries, config, unit and the running service; the unit step comes last."""
    h = f.host
    c = cfg.kubernetes.containerd
    steps: list[Step] = []
    restart: list[str] = []

    art = containerd_tarball(cfg, f.arch)
    old = have.get("containerd")
    if old == c.version:
        steps.append(NoChange(h, phase, "containerd install",
                              f"containerd {c.version} installed in {CONTAINERD_BIN_DIR}"))
    else:
        cmd = "\n".join([
            TEMP_DIR,
            *fetch_verified(art),
            f'tar -xzf "$d/{art.filename}" -C "$d"',
            *install_binaries([(f'"$d/bin/{b}"', f"{CONTAINERD_BIN_DIR}/{b}")
                               for b in CONTAINERD_BINARIES]),
            *stamp_lines(f"{CONTAINERD_BIN_DIR}/containerd", c.version, CONTAINERD_STAMP),
        ])
        what = f"upgrade containerd {old} → {c.version}" if old else f"install containerd {c.version}"
        steps.append(Change(h, phase, "containerd install", what, _source(cfg, art),
                            (Run(cmd, f"download, verify and install {art.filename} into "
                                      f"{CONTAINERD_BIN_DIR}"),)))
        if old:
            restart.append("the containerd binary")

    runc = runc_binary(cfg, f.arch)
    old_runc = have.get("runc")
    if old_runc == c.runc_version:
        steps.append(NoChange(h, phase, "runc install", f"runc {c.runc_version} installed as {RUNC_PATH}"))
    else:
        cmd = "\n".join([
            TEMP_DIR,
            *fetch_verified(runc),
            install_dir(RUNC_PATH.rsplit("/", 1)[0]).text,
            *install_binaries([(f'"$d/{runc.filename}"', RUNC_PATH)]),
            *stamp_lines(RUNC_PATH, c.runc_version, RUNC_STAMP),
        ])
        what = (f"upgrade runc {old_runc} → {c.runc_version}" if old_runc
                else f"install runc {c.runc_version}")
        # running containers keep their runc; new ones get this one: no restart needed
        steps.append(Change(h, phase, "runc install", what, _source(cfg, runc),
                            (Run(cmd, f"download, verify and install {runc.filename} as {RUNC_PATH}"),)))

    conf = file_step(f, phase, WriteFile(CONTAINERD_CONFIG,
                                         containerd_config(cfg, pause_version).encode(), 0o644),
                     "CRI registry hosts under certs.d, kubeadm's pause image pinned, runc's "
                     f"SystemdCgroup = {str(cfg.kubernetes.cgroup_driver == 'systemd').lower()} like the kubelet")
    steps.append(conf)
    if isinstance(conf, Change):
        restart.append("config.toml")
    unit = file_step(f, phase, WriteFile(CONTAINERD_UNIT, containerd_unit(cfg).encode(), 0o644),
                     f"containerd's upstream unit, OOMScoreAdjust={c.oom_score_adjust}")
    steps.append(unit)
    if isinstance(unit, Change):
        restart.append("the unit")
    steps += registry_steps(cfg, f, phase)
    running = f.unit("containerd.service").is_active
    steps.append(unit_step(
        f, phase, "containerd.service", why="the kubelet talks to containerd",
        restart_because=restart if running else [], daemon_reload=isinstance(unit, Change),
        wait=CONTAINERD_CRI_READY))
    return steps


#: containerd serves its socket before its CRI service may be registered; kubeadm's preflight
#: then fails with "unknown service runtime.v1.RuntimeService" (seen in the lab), so the
#: runtime counts as ready only once the CRI gRPC plugin reports ok.
CONTAINERD_CRI_READY = (f"[ -S /run/containerd/containerd.sock ] && {CONTAINERD_BIN_DIR}/ctr --address "
                        "/run/containerd/containerd.sock plugins ls 2>/dev/null "
                        "| grep -Eq '^io[.]containerd[.]grpc[.]v1 +cri +.* ok *$'")


def registry_steps(cfg: ClusterConfig, f: HostFacts, phase: str) -> list[Step]:
    """hosts.toml / registries.conf.d and CA files for `artifacts.registries` (either runtime)."""
    out: list[Step] = []
    for path, content in registry_files(cfg):
        why = ("how the runtime reaches this registry (artifacts.registries)"
               if not path.endswith(".crt") else "the registry's CA (artifacts.registries)")
        if path == CRIO_REGISTRIES:
            why = "registries cri-o may reach over plain HTTP or without verification"
        out.append(file_step(f, phase, WriteFile(path, content.encode(), 0o644), why))
    return out
