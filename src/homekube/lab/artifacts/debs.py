"""kubeadm, kubelet, kubectl, cri-tools and kubernetes-cni as .deb files, shaped like pkgs.k8s.io's.

Names, versions (`1.36.3-1.1`), sections, dependencies and file locations follow the packages
pkgs.k8s.io builds for v1.36 (kubernetes/release, cmd/krel/templates/latest/*/ *.spec, debbuild):

    kubeadm         /usr/bin/kubeadm, /usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf
                    (no dependencies since 1.32)
    kubelet         /usr/bin/kubelet, /usr/lib/systemd/system/kubelet.service, /etc/default/kubelet
                    Depends: kubernetes-cni (>= 1.2.0), mount, util-linux
                    Recommends: iptables (>= 1.8.4)
    kubectl         /usr/bin/kubectl
    cri-tools       /usr/bin/crictl
    kubernetes-cni  /opt/cni/bin/*, /etc/cni/net.d/

The systemd unit and the kubeadm drop-in are written here (not copied): they do what kubeadm
expects of them (`kubeadm init` writes /var/lib/kubelet/{config.yaml,kubeadm-flags.env} and
the kubeconfigs the flags name). The maintainer field says these are lab builds.

`control_text` and the file lists are pure; `build_deb` runs dpkg-deb.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from homekube.lab.artifacts.tarballs import MTIME
from homekube.lab.system import run

MAINTAINER = "homekube lab (built from Go modules) <lab@homekube.invalid>"
REVISION = "1.1"  # pkgs.k8s.io's first build of a version is <version>-1.1

KUBELET_UNIT = """\
# kubelet's systemd unit, as the kubelet package of pkgs.k8s.io ships it in spirit: the
# command line comes from kubeadm's drop-in (kubelet.service.d/10-kubeadm.conf).
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
# kubelet exits until kubeadm has written its configuration: keep retrying, never give up
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

_KUBELET_ARGS = " ".join(
    f"${v}"
    for v in (
        "KUBELET_KUBECONFIG_ARGS",
        "KUBELET_CONFIG_ARGS",
        "KUBELET_KUBEADM_ARGS",
        "KUBELET_EXTRA_ARGS",
    )
)
KUBEADM_DROPIN = (
    "# Installed by the kubeadm package. kubeadm init/join write the files named here:\n"
    "# /etc/kubernetes/{bootstrap-kubelet,kubelet}.conf, /var/lib/kubelet/config.yaml and\n"
    "# /var/lib/kubelet/kubeadm-flags.env (KUBELET_KUBEADM_ARGS, e.g. the CRI socket).\n"
    "# Your own flags go in /etc/default/kubelet as KUBELET_EXTRA_ARGS; they come last and win.\n"
    "[Service]\n"
    'Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf'
    ' --kubeconfig=/etc/kubernetes/kubelet.conf"\n'
    'Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"\n'
    "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\n"
    "EnvironmentFile=-/etc/default/kubelet\n"
    "ExecStart=\n"
    f"ExecStart=/usr/bin/kubelet {_KUBELET_ARGS}\n"
)

KUBELET_DEFAULT = "KUBELET_EXTRA_ARGS=\n"

# Like upstream's debbuild %systemd_post/%systemd_preun: enabled and (re)started on install
# or upgrade, stopped on removal. kubelet then restarts every 10 s until kubeadm configures it.
KUBELET_POSTINST = """\
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    systemctl enable kubelet.service >/dev/null 2>&1 || true
    systemctl restart kubelet.service >/dev/null 2>&1 || true
fi
exit 0
"""

KUBELET_PRERM = """\
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop kubelet.service >/dev/null 2>&1 || true
fi
exit 0
"""

KUBELET_POSTRM = """\
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ] && [ -d /run/systemd/system ]; then
    systemctl disable kubelet.service >/dev/null 2>&1 || true
fi
exit 0
"""

DROPIN_POSTINST = """\
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
"""


@dataclass(frozen=True)
class DebFile:
    """One file in a package: from a built binary (source) or literal text."""

    path: str  # absolute path on the target
    source: Path | None = None
    text: str | None = None
    mode: int = 0o644


@dataclass(frozen=True)
class DebSpec:
    package: str
    version: str  # Debian version, e.g. 1.36.3-1.1
    section: str
    summary: str
    files: tuple[DebFile, ...]
    depends: tuple[str, ...] = ()
    recommends: tuple[str, ...] = ()
    conffiles: tuple[str, ...] = ()
    scripts: Mapping[str, str] = field(default_factory=dict)  # postinst/prerm/postrm -> text
    architecture: str = "amd64"

    @property
    def filename(self) -> str:
        return f"{self.package}_{self.version}_{self.architecture}.deb"


def control_text(spec: DebSpec, installed_kib: int) -> str:
    """DEBIAN/control for spec (field order as dpkg-deb writes them)."""
    fields = [
        ("Package", spec.package),
        ("Version", spec.version),
        ("Architecture", spec.architecture),
        ("Maintainer", MAINTAINER),
        ("Installed-Size", str(installed_kib)),
        ("Depends", ", ".join(spec.depends)),
        ("Recommends", ", ".join(spec.recommends)),
        ("Section", spec.section),
        ("Priority", "optional"),
        ("Homepage", "https://kubernetes.io"),
        ("Description", f"{spec.summary}\n {spec.summary}."),
    ]
    return "".join(f"{k}: {v}\n" for k, v in fields if v)


def installed_size_kib(spec: DebSpec) -> int:
    """What dpkg-gencontrol would say: 1 KiB per file or directory at least, sizes rounded up."""
    total = 0
    dirs: set[str] = set()
    for f in spec.files:
        size = f.source.stat().st_size if f.source is not None else len((f.text or "").encode())
        total += max(1, -(-size // 1024))
        parent = Path(f.path).parent
        while str(parent) != "/":
            dirs.add(str(parent))
            parent = parent.parent
    return total + len(dirs)


def kubernetes_debs(
    kubernetes_bin: Path, kubernetes_version: str, crictl_bin: Path, cri_tools_version: str,
    cni_bin: Path, cni_plugins: Sequence[str], cni_version: str,
) -> tuple[DebSpec, ...]:  # fmt: skip
    """The five packages of pkgs.k8s.io's core:/stable:/v1.X repository."""
    k8s = f"{kubernetes_version}-{REVISION}"
    return (
        DebSpec(
            package="kubeadm",
            version=k8s,
            section="admin",
            summary="Command-line utility for administering a Kubernetes cluster",
            files=(
                DebFile("/usr/bin/kubeadm", kubernetes_bin / "kubeadm", mode=0o755),
                DebFile("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", text=KUBEADM_DROPIN),
            ),
            scripts={"postinst": DROPIN_POSTINST},
        ),
        DebSpec(
            package="kubelet",
            version=k8s,
            section="net",
            summary="Node agent for Kubernetes clusters",
            files=(
                DebFile("/usr/bin/kubelet", kubernetes_bin / "kubelet", mode=0o755),
                DebFile("/usr/lib/systemd/system/kubelet.service", text=KUBELET_UNIT),
                DebFile("/etc/default/kubelet", text=KUBELET_DEFAULT),
                # dpkg drops empty directories; upstream keeps these two with a marker file
                DebFile("/var/lib/kubelet/.kubelet-keep", text=""),
                DebFile("/etc/kubernetes/manifests/.kubelet-keep", text=""),
            ),
            depends=("kubernetes-cni (>= 1.2.0)", "mount", "util-linux"),
            recommends=("iptables (>= 1.8.4)",),
            conffiles=("/etc/default/kubelet",),
            scripts={"postinst": KUBELET_POSTINST, "prerm": KUBELET_PRERM, "postrm": KUBELET_POSTRM},
        ),
        DebSpec(
            package="kubectl",
            version=k8s,
            section="admin",
            summary="Command-line utility for interacting with a Kubernetes cluster",
            files=(DebFile("/usr/bin/kubectl", kubernetes_bin / "kubectl", mode=0o755),),
        ),
        DebSpec(
            package="cri-tools",
            version=f"{cri_tools_version}-{REVISION}",
            section="admin",
            summary="Command-line utility for interacting with a container runtime",
            files=(DebFile("/usr/bin/crictl", crictl_bin / "crictl", mode=0o755),),
        ),
        DebSpec(
            package="kubernetes-cni",
            version=f"{cni_version}-{REVISION}",
            section="net",
            summary="Binaries required to provision kubernetes container networking",
            files=(
                *(DebFile(f"/opt/cni/bin/{p}", cni_bin / p, mode=0o755) for p in sorted(cni_plugins)),
                DebFile("/etc/cni/net.d/.kubernetes-cni-keep", text=""),
            ),
        ),
    )


def build_deb(spec: DebSpec, out_dir: Path) -> Path:
    """dpkg-deb --build a staged tree; reproducible (fixed mtimes, root owner, SOURCE_DATE_EPOCH)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / spec.filename
    with tempfile.TemporaryDirectory(prefix=f"hk-deb-{spec.package}-", dir=out_dir) as tmp:
        stage = Path(tmp) / "root"
        debian = stage / "DEBIAN"
        debian.mkdir(parents=True)
        for f in spec.files:
            target = stage / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.source is not None:
                shutil.copyfile(f.source, target)
            else:
                target.write_text(f.text or "")
            target.chmod(f.mode)
        (debian / "control").write_text(control_text(spec, installed_size_kib(spec)))
        if spec.conffiles:
            (debian / "conffiles").write_text("".join(f"{c}\n" for c in spec.conffiles))
        for name, text in spec.scripts.items():
            (debian / name).write_text(text)
            (debian / name).chmod(0o755)
        for dirpath, dirnames, filenames in os.walk(stage):
            for n in dirnames:
                Path(dirpath, n).chmod(0o755)
            for n in [*dirnames, *filenames]:
                os.utime(Path(dirpath, n), (MTIME, MTIME), follow_symlinks=False)
        os.utime(stage, (MTIME, MTIME))
        tmp_deb = Path(tmp) / spec.filename
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(MTIME)}
        # gzip, not dpkg's default xz: xz -6 of 80 MiB binaries costs ~30 s each, gzip ~3 s
        run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z6", "--build", str(stage), str(tmp_deb)],
            timeout=600,
            env=env,
        )
        tmp_deb.replace(dest)
    return dest
