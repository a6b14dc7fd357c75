"""Take a host back to what it was before homekube (pure): used by `reset` and node removal.

Everything homekube puts on a host is listed here, so that a removed node or a reset host
passes `check` like a fresh one. What homekube installed is recorded on the host when it is
installed (`/var/lib/homekube/`): packages that were already there before homekube stay.
Kernel settings that were changed live (sysctls) return to the distribution's defaults at
the next boot, once their persisted files are gone.
"""

from __future__ import annotations

from homekube.config.model import ClusterConfig, HostSpec
from homekube.etcd import layout as etcd_layout
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.plan.model import Change, NoChange, Run, Step
from homekube.shell import Cmd, lines, script, sh, when

STATE_DIR = "/var/lib/homekube"
PACKAGES_RECORD = f"{STATE_DIR}/packages"
ETCD_USER_RECORD = f"{STATE_DIR}/etcd-user"

UNITS = ("homekube-etcd-backup.timer", "homekube-etcd-backup.service", "etcd.service",
         "kubelet.service", "crio.service", "keepalived.service")
#: written when homekube installed containerd from its release tarball: only then does reset
#: stop containerd and remove its binaries, config and /var/lib/containerd (a containerd that
#: was there before, e.g. Docker's, is left alone)
CONTAINERD_RECORD = f"{STATE_DIR}/containerd-binary"
CONTAINERD_FOOTPRINT = (
    "/etc/containerd", "/etc/systemd/system/containerd.service", "/usr/local/bin/containerd",
    "/usr/local/bin/containerd-shim-runc-v2", "/usr/local/bin/ctr", "/usr/local/sbin/runc",
    "/var/lib/containerd", "/run/containerd",
    # containerd creates its plugin directories there at start
    "/opt/containerd",
)
#: what the running cluster leaves beyond homekube's own files: flannel's init container
#: copies its CNI plugin next to kubernetes-cni's (the package's purge leaves it), kubelet
#: makes its volume plugin directory, and containerd creates a missing hostPath source
#: (kube-proxy mounts /lib/modules, absent on hosts without kernel modules: containers).
#: Those directories go only when nothing else is in them.
CLUSTER_LEFTOVERS = ("/opt/cni/bin/flannel",)
EMPTY_DIRS = ("/opt/cni/bin", "/opt/cni", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
              "/usr/libexec/kubernetes/kubelet-plugins/volume",
              "/usr/libexec/kubernetes/kubelet-plugins", "/usr/libexec/kubernetes", "/lib/modules")

#: files and directories homekube may create (data dir added from config)
FOOTPRINT = (
    "/etc/sysctl.d/90-homekube.conf",
    "/etc/modules-load.d/homekube.conf",
    "/etc/NetworkManager/conf.d/calico.conf",
    "/etc/NetworkManager/conf.d/flannel.conf",
    "/etc/homekube",
    etcd_layout.CONFIG_DIR,
    "/etc/kubernetes",
    "/etc/keepalived/keepalived.conf",
    "/etc/keepalived/homekube-check-apiserver.sh",
    etcd_layout.UNIT_PATH,
    "/etc/systemd/system/homekube-etcd-backup.service",
    "/etc/systemd/system/homekube-etcd-backup.timer",
    "/usr/local/sbin/homekube-etcd-backup",
    *(f"{etcd_layout.TARBALL_BIN}/{b}" for b in etcd_layout.BINARIES),
    "/etc/crio/crio.conf.d/10-homekube.conf",
    "/etc/containers/registries.conf.d/50-homekube.conf",
    "/etc/apt/sources.list.d/kubernetes.list",
    "/etc/apt/sources.list.d/cri-o.list",
    "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
    "/etc/apt/keyrings/cri-o-apt-keyring.gpg",
    "/etc/yum.repos.d/kubernetes.repo",
    "/etc/yum.repos.d/cri-o.repo",
    "/etc/cni/net.d",
    "/var/lib/calico",
    "/var/lib/cni",
    "/run/flannel",
    "/var/lib/kubelet",
    "/var/log/homekube",
    "/run/homekube",
    STATE_DIR,
)


def _registry_certs(config: ClusterConfig) -> tuple[str, ...]:
    """cri-o's CA directories homekube made for `artifacts.registries` (containerd's live in
    /etc/containerd)."""
    return tuple(f"/etc/containers/certs.d/{r.host}" for r in config.artifacts.registries
                 if r.ca or r.ca_file)


def footprint_paths(config: ClusterConfig) -> tuple[str, ...]:
    """Every path homekube may create on a host under this config (containerd's aside)."""
    return (*FOOTPRINT, *_registry_certs(config), config.etcd.data_dir, config.etcd.backup.dir)


def probes(config: ClusterConfig) -> Probes:
    paths = {p: False for p in footprint_paths(config)}
    return Probes(files=paths | {PACKAGES_RECORD: False, ETCD_USER_RECORD: False,
                                 CONTAINERD_RECORD: False},
                  units=set(UNITS))


def recorded_packages(f: HostFacts) -> list[str]:
    st = f.file(PACKAGES_RECORD)
    if st is None or st.content is None:
        return []
    return sorted({ln.strip() for ln in st.content.decode(errors="replace").splitlines() if ln.strip()})


def footprint(cfg: ClusterConfig, f: HostFacts) -> list[str]:
    """What of homekube's is on the host now (paths and active/enabled units)."""
    found = [p for p in footprint_paths(cfg) if f.file(p) is not None]
    found += [u for u in UNITS if f.unit(u).exists and (f.unit(u).is_active or f.unit(u).is_enabled)
              and u not in ("kubelet.service", "crio.service")]
    return found


def reset_script(cfg: ClusterConfig, f: HostFacts, *, purge_data: bool = True) -> str:
    """The host program of a reset: homekube/scripts/reset.sh's functions, then their calls."""
    pkgs = recorded_packages(f)
    from homekube.osfamily import family_of

    fam = family_of(f.os)
    purge = [sh(fam.remove_command(pkgs), compound=True).quiet().or_true()] if (fam and pkgs) else []
    paths = [p for p in (*FOOTPRINT, *_registry_certs(cfg)) if p != STATE_DIR]
    steps = [
        Cmd("systemctl", "disable", "--now", *UNITS).quiet().or_true(),
        # kubeadm's own cleanup first (validated, not executed here: no kubeadm on lab hosts)
        when(Cmd("command", "-v", "kubeadm").redirect(">/dev/null"), Cmd("kubeadm", "reset", "-f").quiet().or_true()),
        Cmd("hk_iptables_cleanup"),
        Cmd("hk_links_cleanup"),
        # containerd only when homekube installed it (its stamp says so), after kubeadm reset
        when(Cmd("test", "-e", CONTAINERD_RECORD),
             Cmd("systemctl", "disable", "--now", "containerd").quiet().or_true(),
             Cmd("hk_rm", *CONTAINERD_FOOTPRINT)),
        Cmd("hk_rm", *paths),
    ]
    if purge_data:
        steps += [Cmd("hk_rm", cfg.etcd.data_dir, cfg.etcd.backup.dir),
                  Cmd("hk_rm_aside", cfg.etcd.data_dir)]
    steps += [
        when(Cmd("test", "-e", ETCD_USER_RECORD),
             Cmd("userdel", "etcd").quiet().or_true(), Cmd("groupdel", "etcd").quiet().or_true()),
        *purge,
        Cmd("hk_rm", *CLUSTER_LEFTOVERS),
        Cmd("hk_rmdir_empty", *EMPTY_DIRS),
        Cmd("rm", "-rf", STATE_DIR),
        lines(Cmd("systemctl", "daemon-reload"), Cmd("systemctl", "reset-failed").quiet().or_true()),
    ]
    return script("reset.sh") + lines(*steps).text


def reset_steps(cfg: ClusterConfig, host: HostSpec | str, f: HostFacts, *, phase: str = "reset",
                why: str = "homekube reset", purge_data: bool = True) -> list[Step]:
    name = host if isinstance(host, str) else host.name
    found = footprint(cfg, f)
    if not found:
        return [NoChange(name, phase, "homekube footprint", "nothing of homekube's is on this host")]
    pkgs = recorded_packages(f)
    summary = (f"remove homekube from {name}: {len(found)} path(s)/unit(s)"
               + (f", packages {', '.join(pkgs)}" if pkgs else "")
               + ("" if purge_data else " (etcd data kept)"))
    return [Change(name, phase, "homekube footprint", summary, why,
                   (Run(reset_script(cfg, f, purge_data=purge_data), "stop units, remove files, "
                        "repos, data and packages homekube installed"),))]
