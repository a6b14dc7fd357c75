"""Host preparation: the seed's first steps, done right (facts.md §1).

The seed persisted a misspelled sysctl (`net.bridge.bridge-navailableables`) that was never
applied; here every key is set live and read back, and a key the host refuses is reported
with its current value instead of failing the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from homekube.components.base import Context
from homekube.components.reset import PACKAGES_RECORD
from homekube.config.model import ClusterConfig, HostSpec
from homekube.etcd import layout as etcd_layout
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.osfamily import (
    FAMILIES,
    OPTIONAL_COMMANDS,
    REQUIRED_COMMANDS,
    OsFamily,
    family_of,
    supported,
    supported_list,
)
from homekube.plan.model import Change, NoChange, Run, Step, WriteFile
from homekube.plan.resources import file_step, run, sysctl_steps
from homekube.shell import Cmd

MODULES_FILE = "/etc/modules-load.d/homekube.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-homekube.conf"
NM_FILE = "/etc/NetworkManager/conf.d/calico.conf"
FIREWALL_MARKER = "/etc/homekube/firewalld-ports"
MODULES = ("overlay", "br_netfilter")
HOST_PACKAGES = ["iptables", "iproute", "socat", "conntrack", "ethtool", "ca-certificates", "curl", "tar"]

GIB = 1024**3
MIN_RAM = int(1.7 * GIB)
WARN_RAM = 4 * GIB
MIN_DISK = 2 * GIB

#: why each sysctl is set (facts.md §1.2)
SYSCTL_WHY = {
    "net.ipv4.ip_forward": "kubeadm preflight requires IPv4 forwarding",
    "net.ipv4.conf.all.forwarding": "Calico's IPv4 requirement",
    "net.ipv6.conf.all.forwarding": "dual-stack pods need IPv6 forwarding (Calico, Kubernetes)",
    "net.ipv6.conf.default.forwarding": "kubeadm's IPv6 preflight checks default.forwarding",
    "net.bridge.bridge-nf-call-iptables": "bridged pod traffic must pass iptables (br_netfilter)",
    "net.bridge.bridge-nf-call-ip6tables": "bridged IPv6 pod traffic must pass ip6tables",
}


def wanted_sysctls(cfg: ClusterConfig) -> dict[str, str]:
    out = {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.all.forwarding": "1",
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1",
    }
    if any(n.version == 6 for n in cfg.network.pods):
        out["net.ipv6.conf.all.forwarding"] = "1"
        out["net.ipv6.conf.default.forwarding"] = "1"
    out.update(cfg.host_prep.sysctls)
    return out


def sysctl_file(cfg: ClusterConfig) -> bytes:
    lines = ["# Managed by homekube: Kubernetes networking sysctls (kubeadm preflight, Calico).", ""]
    for k, v in wanted_sysctls(cfg).items():
        why = SYSCTL_WHY.get(k, "from hostPrep.sysctls in cluster.yaml")
        lines.append(f"# {why}")
        lines.append(f"{k} = {v}")
    return ("\n".join(lines) + "\n").encode()


def modules_file() -> bytes:
    return (
        "# Managed by homekube: container storage (overlay) and bridged traffic filtering.\n"
        + "\n".join(MODULES) + "\n"
    ).encode()


NM_CONF = (
    b"# Managed by homekube: NetworkManager must leave Calico's interfaces alone (Calico's advice).\n"
    b"[keyfile]\n"
    b"unmanaged-devices=interface-name:cali*;interface-name:tunl*;interface-name:vxlan.calico;"
    b"interface-name:vxlan-v6.calico;interface-name:wireguard.cali;interface-name:wg-v6.cali\n"
)
#: flannel's VXLAN devices and bridge (flannel's troubleshooting notes on NetworkManager)
NM_FLANNEL_FILE = "/etc/NetworkManager/conf.d/flannel.conf"
NM_FLANNEL_CONF = (
    b"# Managed by homekube: NetworkManager must leave flannel's interfaces alone.\n"
    b"[keyfile]\n"
    b"unmanaged-devices=interface-name:flannel*;interface-name:cni0;interface-name:veth*\n"
)


def nm_file(cfg: ClusterConfig) -> tuple[str, bytes]:
    """The NetworkManager drop-in for the configured CNI (path, content)."""
    return (NM_FILE, NM_CONF) if cfg.network.cni == "calico" else (NM_FLANNEL_FILE, NM_FLANNEL_CONF)

#: ports to open when firewalld stays on (facts.md §9)
FIREWALL_PORTS = ("6443/tcp", f"{etcd_layout.CLIENT_PORT}-{etcd_layout.METRICS_PORT}/tcp", "10250/tcp",
                  "10256/tcp", "10257/tcp", "10259/tcp", "30000-32767/tcp", "30000-32767/udp", "4789/udp",
                  "5473/tcp", "179/tcp")
#: flannel's VXLAN uses the Linux kernel's port, not IANA's 4789; no Typha, no BGP
FLANNEL_PORTS = (*FIREWALL_PORTS[:8], "8472/udp")


def firewall_ports(cfg: ClusterConfig) -> tuple[str, ...]:
    return FIREWALL_PORTS if cfg.network.cni == "calico" else FLANNEL_PORTS


@dataclass(frozen=True)
class Finding:
    host: str
    message: str
    fatal: bool


def preflight(cfg: ClusterConfig, host: HostSpec, f: HostFacts) -> list[Finding]:
    """Checks that must pass before any host is touched."""
    out: list[Finding] = []
    h = host.name

    def bad(msg: str) -> None:
        out.append(Finding(h, msg, True))

    def warn(msg: str) -> None:
        out.append(Finding(h, msg, False))

    if not supported(f.os):
        bad(f"unsupported OS {f.os.pretty} ({f.os.id} {f.os.version_id}); supported: {supported_list()}")
    if f.arch not in ("x86_64", "aarch64"):
        bad(f"unsupported architecture {f.arch}")
    if f.cpus < 2:
        bad(f"{f.cpus} CPU: kubeadm needs at least 2")
    if f.memory.total < MIN_RAM:
        bad(f"{f.memory.total / GIB:.1f} GiB RAM: at least 1.7 GiB is needed")
    elif f.memory.total < WARN_RAM:
        warn(f"{f.memory.total / GIB:.1f} GiB RAM: under 4 GiB leaves little room for workloads")
    if cfg.kubernetes.enabled and f.cgroup != 2:
        if cfg.kubernetes.allow_cgroup_v1:
            warn("cgroup v1, allowed by kubernetes.allowCgroupV1: kubelet runs with "
                 "failCgroupV1: false and kubeadm skips SystemVerification; cgroup v1 is "
                 "deprecated (boot with cgroup v2 when you can)")
        else:
            bad("cgroup v1: kubelet ≥ 1.35 refuses to start on cgroup v1 (boot with cgroup v2, "
                "systemd.unified_cgroup_hierarchy=1, or set kubernetes.allowCgroupV1 for a host "
                "that cannot)")
    free = min(f.disk.values()) if f.disk else 0
    if f.disk and free < MIN_DISK:
        bad(f"{free / GIB:.1f} GiB free disk: at least {MIN_DISK // GIB} GiB is needed")
    for want, field in ((host.ipv4, "address"), (host.address6, "address6")):
        if want is not None and not f.has_address(str(want)):
            have = ", ".join(a.address for a in f.addresses if a.dev != "lo") or "none"
            bad(f"{field} {want} is not configured on the host (it has {have})")
    if cfg.kubernetes.enabled:
        missing = [c for c in REQUIRED_COMMANDS if c not in f.commands]
        if missing and "iptables" not in missing:
            bad(f"kubeadm needs {', '.join(missing)} on PATH")
    return out


class HostPrepPhase:
    name = "host"
    title = "Host preparation"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        fam_paths = {MODULES_FILE: False, SYSCTL_FILE: False, nm_file(config)[0]: False,
                     FIREWALL_MARKER: False}
        return Probes(
            files=fam_paths,
            sysctls=set(wanted_sysctls(config)),
            units={"NetworkManager.service", "firewalld.service"},
            packages={p for fam in FAMILIES.values() for p in fam.packages(HOST_PACKAGES)},
            modules=set(MODULES),
            commands=set(REQUIRED_COMMANDS) | set(OPTIONAL_COMMANDS),
            disk={"/", config.etcd.data_dir, "/var/lib"},
        )

    def plan(self, ctx: Context) -> list[Step]:
        steps: list[Step] = []
        for host in ctx.hosts():
            steps += self._plan_host(ctx, ctx.facts[host.name])
        return steps

    def _plan_host(self, ctx: Context, f: HostFacts) -> list[Step]:
        cfg = ctx.config
        fam = family_of(f.os)
        if fam is None:
            return [NoChange(f.host, self.name, "host", f"unsupported OS {f.os.pretty}", warning=True)]
        return [*_packages(f, fam), *_modules(f), *_sysctls(cfg, f), *_swap(cfg, f),
                _network_manager(cfg, f), _firewalld(cfg, f)]


PH = HostPrepPhase.name


def _packages(f: HostFacts, fam: OsFamily) -> list[Step]:
    pkgs = fam.packages(HOST_PACKAGES)
    missing = sorted(p for p in pkgs if not f.installed(p))
    if not missing:
        return [NoChange(f.host, PH, "packages", f"installed: {', '.join(sorted(pkgs))}")]
    # recorded, so that `reset` removes exactly what homekube added
    cmd = fam.install_recorded(missing, PACKAGES_RECORD)
    return [Change(f.host, PH, "packages", f"install {', '.join(missing)}",
                   "tools kubeadm and Calico expect (iptables, ip, socat, conntrack, ethtool)",
                   (Run(cmd, f"install {' '.join(missing)}"),))]


def _modules(f: HostFacts) -> list[Step]:
    """Persist the kernel modules, and load those that are neither loaded nor built in."""
    h = f.host
    steps: list[Step] = [file_step(f, PH, WriteFile(MODULES_FILE, modules_file(), 0o644),
                                   "load overlay and br_netfilter at every boot")]
    for m in MODULES:
        state = f.modules.get(m, "missing")
        if state in ("loaded", "builtin"):
            steps.append(NoChange(h, PH, f"module {m}", f"{m} is {'built in' if state == 'builtin' else 'loaded'}"))
        elif state == "loadable":
            steps.append(Change(h, PH, f"module {m}", f"load {m}", "container storage and bridge filtering need it",
                                (run(Cmd("modprobe", m)),)))
        else:
            steps.append(NoChange(h, PH, f"module {m}", f"{m} is neither loaded, built in nor installed",
                                  warning=True))
    return steps


def _sysctls(cfg: ClusterConfig, f: HostFacts) -> list[Step]:
    """Persist the sysctls, then set them live and read them back."""
    loading = ["net.bridge."] if f.modules.get("br_netfilter") == "loadable" else []
    return [file_step(f, PH, WriteFile(SYSCTL_FILE, sysctl_file(cfg), 0o644),
                      "persist Kubernetes networking sysctls across reboots"),
            *sysctl_steps(f, PH, wanted_sysctls(cfg), SYSCTL_WHY, appearing=loading)]


def _swap(cfg: ClusterConfig, f: HostFacts) -> list[Step]:
    h = f.host
    if cfg.host_prep.swap != "off":
        return [NoChange(h, PH, "swap", "swap allowed (kubelet NodeSwap, LimitedSwap)")]
    steps: list[Step] = []
    if f.swaps:
        names = ", ".join(s.name for s in f.swaps)
        steps.append(Change(h, PH, "swap", f"turn swap off ({names})",
                            "kubelet fails with swap on unless hostPrep.swap is `allowed`",
                            (run(Cmd("swapoff", "-a")),)))
    else:
        steps.append(NoChange(h, PH, "swap", "no active swap"))
    swap_lines = [e for e in f.fstab if e.fstype == "swap"]
    if swap_lines:
        edits = [w for e in swap_lines for w in ("-e", f"{e.line_no}s/^/# disabled by homekube: /")]
        steps.append(Change(h, PH, "fstab swap", f"comment out {len(swap_lines)} swap line(s) in /etc/fstab",
                            "keep swap off after a reboot", (run(Cmd("sed", "-i", *edits, "/etc/fstab")),)))
    else:
        steps.append(NoChange(h, PH, "fstab swap", "no swap in /etc/fstab"))
    return steps


def _network_manager(cfg: ClusterConfig, f: HostFacts) -> Step:
    """Keep NetworkManager off the CNI's interfaces, only where it runs."""
    if not f.unit("NetworkManager.service").exists:
        return NoChange(f.host, PH, "NetworkManager", "NetworkManager is not installed")
    path, conf = nm_file(cfg)
    return file_step(f, PH, WriteFile(path, conf, 0o644),
                     "NetworkManager must not manage Calico interfaces" if cfg.network.cni == "calico"
                     else "NetworkManager must not manage flannel's interfaces")


def _firewalld(cfg: ClusterConfig, f: HostFacts) -> Step:
    h = f.host
    fw = f.unit("firewalld.service")
    mode = cfg.host_prep.firewall
    if not fw.exists:
        return NoChange(h, PH, "firewalld", "firewalld is not installed")
    if mode == "disable" and (fw.is_active or fw.is_enabled):
        return Change(h, PH, "firewalld", "stop and disable firewalld",
                      "Calico asks for no other iptables manager",
                      (run(Cmd("systemctl", "disable", "--now", "firewalld")),))
    if mode != "open" or not fw.is_active:
        return NoChange(h, PH, "firewalld", f"firewalld left as it is (hostPrep.firewall: {mode})")
    ports_wanted = firewall_ports(cfg)
    cni = "Calico" if cfg.network.cni == "calico" else "flannel"
    marker = ("\n".join(ports_wanted) + "\n").encode()
    have = f.file(FIREWALL_MARKER)
    if have is not None and have.content == marker:
        return NoChange(h, PH, "firewalld", f"Kubernetes, etcd and {cni} ports are open")
    add = Cmd("firewall-cmd", "-q", "--permanent", *(f"--add-port={p}" for p in ports_wanted))
    return Change(h, PH, "firewalld", f"open Kubernetes, etcd and {cni} ports",
                  "hostPrep.firewall is `open`",
                  (run(add & Cmd("firewall-cmd", "-q", "--reload")),
                   WriteFile(FIREWALL_MARKER, marker, 0o644)))
