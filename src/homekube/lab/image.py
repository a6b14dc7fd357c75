"""The shared root filesystem of every lab host: one debootstrap, cached, then configured.

Hosts mount it read-only as the lower layer of an overlay, so everything written here is
identical on every host; per-host identity (hostname, machine-id, SSH keys, /etc/hosts,
authorized_keys) is written into each host's upper layer at `up` time. That keeps the cache
independent of any lab directory or key, so it survives `rm -rf` of the lab dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from homekube.lab import settings
from homekube.lab.system import LabError, log, mounts_under, run, unmount
from homekube.shell import script

# minbase + what a real server has + what provisioning and tests poke at. Bookworm names only.
PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "python3",
    "procps",
    "kmod",
    "iputils-ping",
    "ca-certificates",
    "curl",
    "gnupg",
    "less",
    "nftables",
    "iptables",
    "tar",
    "gzip",
    "util-linux",
    "passwd",
    "openssl",
    "xxd",
)

# Bump when configure() changes: `up` then re-applies it to a cached image (no re-debootstrap).
CONFIG_VERSION = 3
MARKER = ".homekube-lab-base"
INIT_PATH = "/usr/local/sbin/homekube-lab-init"

# Background jobs that grab the dpkg lock during tests, or waste memory, or wait for nothing.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "dpkg-db-backup.timer",
    "systemd-tmpfiles-clean.timer",
    "console-getty.service",
    "getty@tty1.service",
    "systemd-networkd-wait-online.service",
)

# nspawn mounts the cgroup v1 controllers read-only and systemd decides at start-up which
# controllers it may use. Each host has its own cgroup subtree (see rig.py), so PID 1 is this
# wrapper, which makes them writable and then becomes systemd.
INIT_SCRIPT = script("lab-init.sh")


@dataclass(frozen=True)
class AptSources:
    """The Debian mirrors this machine's apt uses: for debootstrap and the lab's repository."""

    debian: str
    security: str | None


def _source_uris() -> list[str]:
    uris: list[str] = []
    apt = Path("/etc/apt")
    for f in sorted(apt.glob("sources.list.d/*.sources")):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                uris.extend(line.split()[1:])
    for f in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            # deb [options] uri suite components
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
            if m:
                uris.append(m.group(1))
    return [u.rstrip("/") for u in uris]


def apt_sources() -> AptSources:
    uris = _source_uris()
    debian = os.environ.get("HOMEKUBE_LAB_APT_MIRROR") or next(
        (u for u in uris if u.endswith("/debian")), None
    )
    security = os.environ.get("HOMEKUBE_LAB_APT_SECURITY") or next(
        (u for u in uris if u.endswith("/debian-security")), None
    )
    if not debian:
        raise LabError(
            "no Debian mirror in this machine's apt sources",
            hint="set HOMEKUBE_LAB_APT_MIRROR=http://deb.debian.org/debian",
        )
    return AptSources(
        debian=debian.rstrip("/"), security=security.rstrip("/") if security else None
    )


def _marker(base: Path) -> dict[str, object] | None:
    try:
        data = json.loads((base / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_built(base: Path) -> bool:
    """A debootstrap with today's package list exists (its configuration may be stale)."""
    m = _marker(base)
    return m is not None and m.get("packages") == list(PACKAGES)


def is_current(base: Path, sources: AptSources) -> bool:
    m = _marker(base)
    return (
        m is not None
        and m.get("packages") == list(PACKAGES)
        and m.get("config") == CONFIG_VERSION
        and m.get("mirror") == sources.debian
        and m.get("security") == sources.security
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _symlink(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def configure(root: Path, sources: AptSources) -> None:
    """Make a debootstrapped tree a lab host image; idempotent, so it can be re-applied."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # generated per host: identical host keys would defeat known_hosts
    _write(root / "etc/machine-id", "")  # written per host
    _symlink(root / "var/lib/dbus/machine-id", "/etc/machine-id")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    _write(
        root / "etc/ssh/sshd_config.d/homekube-lab.conf",
        "# homekube lab: key-only root login; ed25519/ecdsa keys only (RSA keygen costs ~1 s)\n"
        "PermitRootLogin prohibit-password\n"
        "UseDNS no\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "HostKey /etc/ssh/ssh_host_ecdsa_key\n",
    )
    # No DNS server is reachable; pointing at the bridge fails fast (port unreachable) and
    # gives CoreDNS no loop to detect. Names of the lab hosts come from /etc/hosts.
    _write(root / "etc/resolv.conf", f"nameserver {settings.GATEWAY4}\n")
    # Hosts reach no Debian mirror: their only source is the lab's signed repository
    # (debrepo.py), whose address depends on the slot, so it is written per host at `up`.
    _write(
        root / "etc/apt/sources.list",
        "# homekube lab: see sources.list.d/homekube-lab.list (written per host)\n",
    )
    for stale in (root / "etc/apt/sources.list.d").glob("*"):
        stale.unlink()
    # an image configured before CONFIG_VERSION 3 pointed every slot at slot 0's apt proxy
    (root / "etc/apt/apt.conf.d/01homekube-lab-proxy").unlink(missing_ok=True)
    # indexes of the Debian mirror debootstrap used: packages no host could fetch
    lists = root / "var/lib/apt/lists"
    for f in lists.glob("*") if lists.is_dir() else ():
        if f.is_file() and f.name != "lock":
            f.unlink()
    for unit in MASKED_UNITS:
        _symlink(root / "etc/systemd/system" / unit, "/dev/null")
    _write(root / INIT_PATH.lstrip("/"), INIT_SCRIPT, 0o755)
    _write(
        root / "etc/systemd/journald.conf.d/homekube-lab.conf",
        "[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n",
    )
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    marker = {
        "packages": list(PACKAGES),
        "config": CONFIG_VERSION,
        "mirror": sources.debian,
        "security": sources.security,
        "configured": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    _write(root / MARKER, json.dumps(marker, indent=1) + "\n")


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to descend into a mount (debootstrap mounts /proc and /sys)."""
    for m in mounts_under(path):
        if not unmount(m):
            raise LabError(f"{m} is still mounted; not deleting {path}")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def debootstrap(base: Path, sources: AptSources, log_path: Path) -> None:
    """Debootstrap into a sibling and swap it in, so a failed build never breaks the cache."""
    tmp = base.with_name(base.name + ".tmp")
    remove_tree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log.info("debootstrap %s (minbase + %d packages); takes ~70 s", settings.SUITE, len(PACKAGES))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cp = run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            settings.SUITE,
            str(tmp),
            sources.debian,
        ],
        check=False,
        timeout=1800,
    )
    log_path.write_text(cp.stdout + cp.stderr)
    if cp.returncode != 0:
        tail = "\n".join((cp.stdout + cp.stderr).strip().splitlines()[-20:])
        remove_tree(tmp)
        raise LabError(f"debootstrap failed (exit {cp.returncode}; log {log_path}):\n{tail}")
    log.info("debootstrap took %.1f s", time.monotonic() - t0)
    configure(tmp, sources)
    remove_tree(base)
    tmp.rename(base)
