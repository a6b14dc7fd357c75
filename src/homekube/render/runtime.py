"""The container runtime's files: containerd's config, unit and registry hosts; cri-o's registries.

Pure, typed, no I/O. Sources:

* containerd 2.x config version 3 (containerd ``docs/cri/config.md``): the CRI images plugin
  ``io.containerd.cri.v1.images`` (snapshotter, ``pinned_images.sandbox``, ``registry.config_path``)
  and the CRI runtime plugin ``io.containerd.cri.v1.runtime`` (``restrict_oom_score_adj``, the
  runc runtime with ``SystemdCgroup``, CNI directories);
* ``hosts.toml`` per registry host under ``config_path`` (containerd ``docs/hosts.md``): a
  ``server`` and one ``[host."<url>"]`` entry with ``ca`` / ``skip_verify``; containerd reads
  these without a restart;
* containerd's own ``containerd.service`` (its repository root), with ``OOMScoreAdjust`` from
  cluster.yaml;
* cri-o reads ``/etc/containers/registries.conf.d/*.conf`` (containers-registries.conf.d(5):
  ``insecure = true`` allows plain HTTP and unverified TLS) and CA certificates from
  ``/etc/containers/certs.d/<host>/*.crt`` (containers-certs.d(5)).

Validated, not executed here: no containerd ran against these files where this was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homekube.config.model import ClusterConfig, RegistrySpec
from homekube.render import tomlout
from homekube.render.images import pause_image

__all__ = [
    "CONTAINERD_BINARIES",
    "CONTAINERD_BIN_DIR",
    "CONTAINERD_CERTS_DIR",
    "CONTAINERD_CONFIG",
    "CONTAINERD_SOCKET",
    "CONTAINERD_UNIT",
    "CONTAINERS_CERTS_DIR",
    "CRIO_REGISTRIES",
    "CRIO_SOCKET",
    "RUNC_PATH",
    "ContainerdConfig",
    "ContainerdUnit",
    "RegistryHosts",
    "containerd_config",
    "containerd_unit",
    "cri_socket",
    "registry_files",
]

CRIO_SOCKET = "unix:///var/run/crio/crio.sock"
"""CRI-O's socket (facts.md §2.4; crio.conf.5 ``listen``)."""
CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
"""containerd's default ``grpc.address``."""

CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_CERTS_DIR = "/etc/containerd/certs.d"
CONTAINERD_UNIT = "/etc/systemd/system/containerd.service"
CONTAINERD_BIN_DIR = "/usr/local/bin"
#: what the release tarball's bin/ holds (containerd-stress is a test tool, not installed)
CONTAINERD_BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")
RUNC_PATH = "/usr/local/sbin/runc"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"

CRIO_REGISTRIES = "/etc/containers/registries.conf.d/50-homekube.conf"
CONTAINERS_CERTS_DIR = "/etc/containers/certs.d"

_HEADER = "# Written by homekube from cluster.yaml ({name}); local edits are overwritten.\n"


def cri_socket(cfg: ClusterConfig) -> str:
    """The CRI endpoint of the configured runtime (kubeadm ``criSocket``, kubelet endpoint)."""
    return CONTAINERD_SOCKET if cfg.kubernetes.runtime == "containerd" else CRIO_SOCKET


# --------------------------------------------------------------------------------------------
# containerd


@dataclass(frozen=True)
class ContainerdConfig:
    """The part of containerd's config.toml (version 3) homekube sets; the rest is default."""

    sandbox_image: str
    systemd_cgroup: bool
    restrict_oom_score_adj: bool
    snapshotter: str = "overlayfs"
    config_path: str = CONTAINERD_CERTS_DIR
    runc_binary: str = RUNC_PATH
    cni_bin_dirs: tuple[str, ...] = (CNI_BIN_DIR,)
    cni_conf_dir: str = CNI_CONF_DIR

    def to_dict(self) -> dict[str, Any]:
        runc = {
            "runtime_type": "io.containerd.runc.v2",
            "options": {"BinaryName": self.runc_binary, "SystemdCgroup": self.systemd_cgroup},
        }
        images: dict[str, Any] = {"snapshotter": self.snapshotter}
        if self.snapshotter != "overlayfs":
            # the transfer service unpacks only for the snapshotters in its unpack_config
            # (overlayfs for the host platform by default); the CRI's own pull uses ours
            images["use_local_image_pull"] = True
        return {
            "version": 3,
            "plugins": {
                "io.containerd.cri.v1.images": {
                    **images,
                    "pinned_images": {"sandbox": self.sandbox_image},
                    "registry": {"config_path": self.config_path},
                },
                "io.containerd.cri.v1.runtime": {
                    "restrict_oom_score_adj": self.restrict_oom_score_adj,
                    "containerd": {
                        "default_runtime_name": "runc",
                        "runtimes": {"runc": runc},
                    },
                    "cni": {"bin_dirs": list(self.cni_bin_dirs), "conf_dir": self.cni_conf_dir},
                },
            },
        }


def containerd_config(cfg: ClusterConfig, pause_version: str) -> str:
    """Render ``/etc/containerd/config.toml``.

    The sandbox image is kubeadm's pause image (a mismatch is a kubeadm preflight warning and
    a second image to carry into an air-gapped registry); runc's ``SystemdCgroup`` follows
    ``kubernetes.cgroupDriver`` like the kubelet does; registries are configured per host under
    ``config_path`` (the inline ``registry.mirrors`` of containerd 1.x are deprecated).
    """
    c = cfg.kubernetes.containerd
    conf = ContainerdConfig(
        sandbox_image=pause_image(cfg, pause_version),
        systemd_cgroup=cfg.kubernetes.cgroup_driver == "systemd",
        restrict_oom_score_adj=c.restrict_oom_score_adj,
        snapshotter=c.snapshotter,
    )
    why = ("# restrict_oom_score_adj: containers never get a lower OOM score adjustment than "
           "containerd's own.\n" if c.restrict_oom_score_adj else "")
    return _HEADER.format(name=cfg.name) + why + "\n" + tomlout.dumps(conf.to_dict())


@dataclass(frozen=True)
class ContainerdUnit:
    """containerd's systemd unit, as upstream ships it, with our binary path and OOM score."""

    binary: str
    oom_score_adjust: int

    def render(self) -> str:
        lines = [
            "# Managed by homekube (containerd's upstream unit; OOMScoreAdjust from cluster.yaml).",
            "[Unit]",
            "Description=containerd container runtime",
            "Documentation=https://containerd.io",
            "After=network.target dbus.service",
            "",
            "[Service]",
            "ExecStartPre=-/sbin/modprobe overlay",
            f"ExecStart={self.binary}",
            "Type=notify",
            "Delegate=yes",
            "KillMode=process",
            "Restart=always",
            "RestartSec=5",
            # non-zero Limit*s cost kernel accounting; cgroups account per container instead
            "LimitNPROC=infinity",
            "LimitCORE=infinity",
            "TasksMax=infinity",
            f"OOMScoreAdjust={self.oom_score_adjust}",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
        return "\n".join(lines)


def containerd_unit(cfg: ClusterConfig) -> str:
    return ContainerdUnit(f"{CONTAINERD_BIN_DIR}/containerd",
                          cfg.kubernetes.containerd.oom_score_adjust).render()


# --------------------------------------------------------------------------------------------
# registries


@dataclass(frozen=True)
class RegistryHosts:
    """One ``hosts.toml``: the registry itself as server and as its only host."""

    url: str
    ca: str | None = None
    skip_verify: bool = False
    capabilities: tuple[str, ...] = field(default=("pull", "resolve"))

    def to_dict(self) -> dict[str, Any]:
        host: dict[str, Any] = {"capabilities": list(self.capabilities)}
        if self.ca is not None:
            host["ca"] = self.ca
        if self.skip_verify:
            host["skip_verify"] = True
        return {"server": self.url, "host": {self.url: host}}


def _ca_text(r: RegistrySpec) -> str | None:
    return r.ca_pem()


def registry_files(cfg: ClusterConfig) -> list[tuple[str, str]]:
    """(path, content) of every registry file the configured runtime reads, in a stable order.

    containerd: ``certs.d/<host>/hosts.toml`` (+ ``ca.crt``) per registry. cri-o: one
    registries.conf.d drop-in listing the registries that need ``insecure`` (plain HTTP or no
    verification) and ``/etc/containers/certs.d/<host>/ca.crt`` per registry with a CA. Nothing
    without `artifacts.registries`.
    """
    regs = cfg.artifacts.registries
    out: list[tuple[str, str]] = []
    if cfg.kubernetes.runtime == "containerd":
        for r in regs:
            d = f"{CONTAINERD_CERTS_DIR}/{r.host}"
            ca = _ca_text(r)
            hosts = RegistryHosts(r.url, ca=f"{d}/ca.crt" if ca else None, skip_verify=r.skip_verify)
            out.append((f"{d}/hosts.toml",
                        _HEADER.format(name=cfg.name) + "\n" + tomlout.dumps(hosts.to_dict())))
            if ca:
                out.append((f"{d}/ca.crt", ca))
        return out
    insecure = [r for r in regs if r.plain_http or r.skip_verify]
    if insecure:
        doc = {"registry": [{"location": r.host, "insecure": True} for r in insecure]}
        out.append((CRIO_REGISTRIES, _HEADER.format(name=cfg.name)
                    + "# insecure: plain HTTP or TLS without verification (artifacts.registries)\n"
                    + "\n" + tomlout.dumps(doc)))
    for r in regs:
        ca = _ca_text(r)
        if ca:
            out.append((f"{CONTAINERS_CERTS_DIR}/{r.host}/ca.crt", ca))
    return out
