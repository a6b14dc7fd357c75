"""Real test hosts on one machine: systemd-nspawn containers that boot systemd and run sshd.

Each host hN is a container booting real systemd (PID 1) in its own network namespace hk-hN,
attached by veth hk-v-hN to bridge hkbr0 (10.77.0.1/24, fd77::1/64 on the machine), with
address 10.77.0.(10+N) / fd77::(10+N). Its root is an overlay over one cached debootstrap
image, so a fresh host costs ~1 s and a few MiB. An HTTP mirror on the bridge serves
artifacts (etcd) the hosts cannot download and the lab's signed Debian repository, the only
apt source hosts have (debrepo.py). An nft table keeps every host off the outside world.

The machine this targets has cgroup v1 (hybrid) and no systemd as PID 1, hence the per-host
cgroups and the supervisor in launcher.py. Everything the lab creates is named with an `hk`
prefix and every process it signals is checked against what it recorded when starting it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from homekube.lab import (
    artifacts,
    clusteryaml,
    debrepo,
    image,
    launcher,
    mirror,
    network,
    services,
    settings,
)
from homekube.lab.settings import LabPaths
from homekube.lab.system import (
    CmdlineMatch,
    LabError,
    ensure_host_tools,
    exclusive_lock,
    find_processes,
    is_mountpoint,
    live_pid,
    log,
    mounts_under,
    require_root,
    run,
    signal_if_match,
    spawn_detached,
    terminate,
    unmount,
    wait_gone,
    write_pid_record,
)

if TYPE_CHECKING:
    from homekube.lab.artifacts.pipeline import LabArtifacts

READY_TIMEOUT = 60.0  # per host; boots take 1.5-3 s here, with a rare outlier near 20 s
STOP_GRACE = 20.0  # seconds between SIGTERM (clean poweroff) and SIGKILL
LAUNCH_GRACE = 5.0  # seconds a just-spawned supervisor may take to exec
# Another lab directory may own the bridge; this file says which (it lives in /run so a
# reboot, which removes the bridge too, forgets it).
OWNER_FILE = settings.OWNER_FILE


# ------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class LabHost:
    name: str
    ipv4: str
    ipv6: str

    @classmethod
    def of(cls, index: int) -> LabHost:
        return cls(settings.host_name(index), settings.host_ipv4(index), settings.host_ipv6(index))


@dataclass(frozen=True)
class Lab:
    """A running lab: what a client needs to reach its hosts and verify their host keys."""

    dir: Path
    hosts: tuple[LabHost, ...]
    key_path: Path
    known_hosts_path: Path
    mirror_url: str
    etcd_sha256: str
    config_path: Path | None = None
    #: with `up(..., kubernetes=True)`: the published Kubernetes artifacts (registry running)
    artifacts: LabArtifacts | None = None

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no lab host {name!r}; the lab has {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def ssh_argv(self, name: str, *, ipv6: bool = False) -> list[str]:
        """ssh with the lab key and strict host key checking against the lab's known_hosts."""
        h = self.host(name)
        return _ssh_argv(
            self.key_path, self.known_hosts_path, h.ipv6 if ipv6 else h.ipv4, timeout=5
        )


@dataclass(frozen=True)
class HostStatus:
    name: str
    ipv4: str
    ipv6: str
    state: str  # running | stopped
    pid: int | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class LabStatus:
    dir: Path
    up: bool
    hosts: tuple[HostStatus, ...] = ()
    mirror_running: bool = False
    registry_running: bool = False
    registry_host: str = settings.REGISTRY_HOST
    apt_repo_url: str | None = None  # the lab's Debian repository, when the mirror serves it
    mirror_url: str = settings.MIRROR_URL
    key_path: Path | None = None
    known_hosts_path: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------ public API


def mirror_url() -> str:
    """Base URL of the lab's artifact mirror, as hosts see it."""
    return settings.MIRROR_URL


def etcd_tarball_sha256() -> str:
    """sha256 of the mirror's etcd tarball, building it first when absent (needs no host up)."""
    return mirror.ensure_mirror(LabPaths.from_env().mirror)


def build(force: bool = False) -> Path:
    """Make sure the cached base image and the lab's Debian repository exist; returns the image."""
    require_root()
    paths = LabPaths.from_env()
    with exclusive_lock(paths.lock_file):
        if _host_dirs(paths):
            raise LabError(
                "lab hosts are up and use the base image",
                hint="run `homekube lab down` first",
            )
        ensure_host_tools()
        _ensure_base(paths, force=force)
        debrepo.ensure(paths, image.apt_sources())
    return paths.base


def up(
    n: int,
    config_path: Path | str | None = None,
    *,
    kubernetes: bool = False,
    kubernetes_version: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Lab:
    """Start hosts h1..hN (reusing a running lab of the same size) and wait until ready.

    With config_path, also write a ready cluster.yaml there. A lab of another size is torn
    down and re-created; a lab left by a crashed run is cleaned first. New hosts come with
    an empty <labdir>/state, since homekube's state there described the old hosts' cluster.
    With kubernetes, also build what is missing of the Kubernetes artifacts (the first time
    15-30 min), publish them into the mirror and start the registry with their images;
    progress gets a line per step (default: the lab's log). kubernetes_version picks the
    minor the cluster.yaml names ("1.35" to test an upgrade to 1.36; default: the newest);
    the default minor is published either way (what an older one upgrades to), another
    minor only when named.
    """
    if not 1 <= n <= settings.MAX_HOSTS:
        raise LabError(f"the lab takes 1 to {settings.MAX_HOSTS} hosts, not {n}")
    require_root()
    paths = LabPaths.from_env()
    cfg = Path(config_path).absolute() if config_path is not None else None
    say = progress or _progress
    minors = artifacts.minors_for(kubernetes_version) if kubernetes else ()
    if kubernetes:
        # the long part, before the lab lock: `status` and other slots stay usable meanwhile
        artifacts.run(say, publish=False, minors=minors)
    with exclusive_lock(paths.lock_file):
        _check_owner(paths)
        ensure_host_tools()
        _machine_minimums(say)
        lab = _reuse(paths, n, cfg)
        if lab is None:
            lab = _create(paths, n, cfg)
        if kubernetes:
            _kubelet_kernel_settings(say)
            artifacts.run(say, minors=minors)  # all cached by now: publish and push only
            lab = dataclasses.replace(
                lab, artifacts=artifacts.describe(published=True, minor=kubernetes_version))
    if cfg is not None:
        write_config(lab, cfg)
    return lab


def down() -> None:
    """Stop every host cleanly and remove everything `up` created on the machine.

    Keeps the lab key, the mirror and the Debian repository (they make the next `up` fast). Safe
    when nothing is up, and cleans what a crashed run left behind.
    """
    require_root()
    paths = LabPaths.from_env()
    with exclusive_lock(paths.lock_file):
        _down(paths)


#: What the kubelet insists on at start (its setupKernelTunables): it writes these when they
#: differ and exits when the write fails. /proc/sys outside net/ is read-only inside a lab
#: host and these keys are not per-namespace, so they are set here, on the machine, once.
KUBELET_KERNEL_SETTINGS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


#: Machine-wide limits the lab raises (never lowers) before it boots hosts: every host's systemd
#: and every kubelet, containerd and etcd inside take inotify instances from root's one budget,
#: and a few labs side by side (one per slot) use up the default 128; a host's systemd then
#: dies at boot with "Failed to allocate manager object: Too many open files".
MACHINE_MINIMUMS = {"fs/inotify/max_user_instances": 1024}


def _machine_minimums(say: Callable[[str], None]) -> None:
    for key, floor in MACHINE_MINIMUMS.items():
        path = Path("/proc/sys") / key
        try:
            have = int(path.read_text().strip())
            if have < floor:
                path.write_text(f"{floor}\n")
                say(f"machine kernel: {key.replace('/', '.')} {have} -> {floor} (lab hosts)")
        except (OSError, ValueError) as e:
            raise LabError(f"cannot raise {key.replace('/', '.')} to {floor}: {e}",
                           hint="run as root on the machine") from None


def _kubelet_kernel_settings(say: Callable[[str], None]) -> None:
    """Lab only: put the machine's kernel where the kubelets of the lab hosts want it."""
    for key, want in KUBELET_KERNEL_SETTINGS.items():
        path = Path("/proc/sys") / key
        try:
            have = path.read_text().strip()
        except OSError as e:
            raise LabError(f"cannot read {path}: {e}") from None
        if have == want:
            continue
        try:
            path.write_text(want + "\n")
        except OSError as e:
            raise LabError(f"cannot set {key.replace('/', '.')} = {want} on this machine: {e}",
                           hint="the lab's kubelets need it; run as root on the machine") from None
        say(f"machine kernel: {key.replace('/', '.')} {have} -> {want} (the lab's kubelets need it)")


def _progress(line: str) -> None:
    log.info("%s", line)


def current() -> Lab | None:
    """The lab that is up (some hosts may be stopped), or None."""
    return _current(LabPaths.from_env())


def status() -> LabStatus:
    paths = LabPaths.from_env()
    lab = _current(paths)
    hosts = []
    for name in _host_dirs(paths):
        idx = settings.host_index(name)
        pid = live_pid(paths.host_dir(name) / "nspawn.pid", _nspawn_match(paths, name))
        hosts.append(
            HostStatus(
                name=name,
                ipv4=settings.host_ipv4(idx),
                ipv6=settings.host_ipv6(idx),
                state="running" if pid else "stopped",
                pid=pid,
                memory_bytes=_memory_usage(paths, name) if pid else None,
            )
        )
    notes = []
    if lab is None and hosts:
        notes.append("host directories without a lab record (crashed run?): run `down`")
    return LabStatus(
        dir=paths.root,
        up=lab is not None,
        hosts=tuple(hosts),
        mirror_running=services.mirror_running(paths),
        registry_running=services.registry_running(paths),
        apt_repo_url=(
            f"{settings.MIRROR_URL}{debrepo.MIRROR_SUBDIR}/"
            if (paths.mirror / debrepo.MIRROR_SUBDIR / "dists").is_dir()
            else None
        ),
        key_path=paths.key if paths.key.exists() else None,
        known_hosts_path=paths.known_hosts if paths.known_hosts.exists() else None,
        notes=tuple(notes),
    )


def host_exec(
    name: str,
    cmd: str | Sequence[str],
    *,
    timeout: float = 300.0,
    input: str | None = None,
    ipv6: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a shell command on a host over plain OpenSSH (independent of homekube's transport).

    Never raises for a failing command: look at returncode (255 means ssh itself failed).
    """
    paths = LabPaths.from_env()
    idx = _known_host_index(paths, name)
    addr = settings.host_ipv6(idx) if ipv6 else settings.host_ipv4(idx)
    remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
    argv = [*_ssh_argv(paths.key, paths.known_hosts, addr, timeout=5), remote]
    try:
        return subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{remote!r} did not finish within {timeout:.0f} s", host=name) from e


def stop_host(name: str) -> None:
    """Power a host off cleanly (like pulling its plug after shutdown); its disk is kept."""
    require_root()
    paths = LabPaths.from_env()
    with exclusive_lock(paths.lock_file):
        idx = _known_host_index(paths, name)
        _stop_hosts(paths, [name])
        network.set_host_cable(idx, plugged=False)


def start_host(name: str) -> None:
    """Boot a stopped host again (same disk, keys and addresses) and wait until it is ready."""
    require_root()
    paths = LabPaths.from_env()
    with exclusive_lock(paths.lock_file):
        _known_host_index(paths, name)
        d = paths.host_dir(name)
        if live_pid(d / "nspawn.pid", _nspawn_match(paths, name)):
            return
        idx = settings.host_index(name)
        if not is_mountpoint(d / "root") or settings.netns_name(idx) not in network.netns_list():
            raise LabError(
                "the host's disk or network is gone", host=name, hint="run `homekube lab up` again"
            )
        _launch(paths, name)
        _wait_ready(paths, name, time.monotonic() + READY_TIMEOUT)


def write_config(lab: Lab, path: Path) -> Path:
    """Write the lab's cluster.yaml (see clusteryaml.render) to path."""
    text = clusteryaml.render(
        hosts=[
            clusteryaml.YamlHost(h.name, h.ipv4, h.ipv6, clusteryaml.default_roles(i))
            for i, h in enumerate(lab.hosts, start=1)
        ],
        etcd_sha256=lab.etcd_sha256,
        mirror_url=lab.mirror_url,
        key_path=lab.key_path,
        known_hosts_path=lab.known_hosts_path,
        state_dir=lab.dir / "state",
        kubernetes=lab.artifacts,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ internals


def _ssh_argv(key: Path, known_hosts: Path, addr: str, *, timeout: int) -> list[str]:
    return [
        "ssh",
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"ConnectTimeout={timeout}",
        "-o", "LogLevel=ERROR",
        f"root@{addr}",
    ]  # fmt: skip


def _host_dirs(paths: LabPaths) -> list[str]:
    if not paths.hosts.is_dir():
        return []
    names = [d.name for d in paths.hosts.iterdir() if settings.HOST_NAME_RE.match(d.name)]
    return sorted(names, key=settings.host_index)


def _known_host_index(paths: LabPaths, name: str) -> int:
    try:
        idx = settings.host_index(name)
    except ValueError as e:
        raise LabError(str(e)) from None
    if not paths.host_dir(name).is_dir():
        have = ", ".join(_host_dirs(paths)) or "none"
        raise LabError(f"no lab host {name!r} (hosts: {have})", hint="run `homekube lab up N`")
    return idx


def _read_state(paths: LabPaths) -> dict[str, object] | None:
    try:
        data = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _current(paths: LabPaths) -> Lab | None:
    state = _read_state(paths)
    if state is None:
        return None
    n, sha, cfg = state.get("hosts"), state.get("etcd_sha256"), state.get("config_path")
    if not isinstance(n, int) or not isinstance(sha, str):
        return None
    if _host_dirs(paths) != [settings.host_name(i) for i in range(1, n + 1)]:
        return None
    return Lab(
        dir=paths.root,
        hosts=tuple(LabHost.of(i) for i in range(1, n + 1)),
        key_path=paths.key,
        known_hosts_path=paths.known_hosts,
        mirror_url=settings.MIRROR_URL,
        etcd_sha256=sha,
        config_path=Path(cfg) if isinstance(cfg, str) else None,
    )


def _write_state(paths: LabPaths, lab: Lab) -> None:
    data = {
        "hosts": len(lab.hosts),
        "etcd_sha256": lab.etcd_sha256,
        "config_path": str(lab.config_path) if lab.config_path else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(paths.state_file)


def _check_owner(paths: LabPaths) -> None:
    try:
        owner = Path(OWNER_FILE.read_text().strip())
    except OSError:
        return
    if owner != paths.root and (owner / "lab.json").exists():
        raise LabError(
            f"the lab in {owner} is up and owns bridge {settings.BRIDGE}",
            hint=f"take it down first: HOMEKUBE_LAB_DIR={owner} homekube lab down",
        )


def _ensure_base(paths: LabPaths, *, force: bool = False) -> None:
    sources = image.apt_sources()
    if force or not image.is_built(paths.base):
        t0 = time.monotonic()
        image.debootstrap(paths.base, sources, paths.root / "debootstrap.log")
        log.info("base image built in %.1f s: %s", time.monotonic() - t0, paths.base)
    elif not image.is_current(paths.base, sources):
        log.info("re-applying the lab configuration to the cached base image %s", paths.base)
        image.configure(paths.base, sources)


def _ensure_key(paths: LabPaths) -> None:
    if paths.key.is_file() and paths.key.with_suffix(".pub").is_file():
        return
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_keypair(ed25519.Ed25519PrivateKey.generate(), paths.key, "homekube-lab")


def _write_keypair(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, path: Path, comment: str
) -> str:
    """Write an OpenSSH key pair; returns the public line ("type base64")."""
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    path.with_name(path.name + ".pub").write_text(f"{public} {comment}\n")
    return public


def _reuse(paths: LabPaths, n: int, cfg: Path | None) -> Lab | None:
    lab = _current(paths)
    if lab is None:
        return None
    if len(lab.hosts) != n:
        log.info("a lab of %d hosts is up; re-creating it with %d", len(lab.hosts), n)
        return None
    for h in lab.hosts:
        d = paths.host_dir(h.name)
        idx = settings.host_index(h.name)
        if not is_mountpoint(d / "root") or settings.netns_name(idx) not in network.netns_list():
            log.info("%s is damaged (disk or network gone); re-creating the lab", h.name)
            return None
    network.bridge_up()
    network.guard_up()
    sha = mirror.ensure_mirror(paths.mirror)
    repo = debrepo.ensure(paths, image.apt_sources())
    for h in lab.hosts:  # the signing key may be new if its cache dir was deleted meanwhile
        _write_apt_files(paths.host_dir(h.name) / "root", repo)
    services.mirror_up(paths)
    for h in lab.hosts:
        if not live_pid(paths.host_dir(h.name) / "nspawn.pid", _nspawn_match(paths, h.name)):
            log.info("%s was stopped; starting it", h.name)
            _launch(paths, h.name)
    for h in lab.hosts:
        _wait_ready(paths, h.name, time.monotonic() + READY_TIMEOUT)
    lab = Lab(
        dir=lab.dir,
        hosts=lab.hosts,
        key_path=lab.key_path,
        known_hosts_path=lab.known_hosts_path,
        mirror_url=lab.mirror_url,
        etcd_sha256=sha,
        config_path=cfg or lab.config_path,
    )
    _write_state(paths, lab)
    log.info("reusing the running lab of %d hosts", n)
    return lab


def _create(paths: LabPaths, n: int, cfg: Path | None) -> Lab:
    _down(paths)  # a lab of another size, or leftovers of a crashed run
    _ensure_base(paths)
    _ensure_key(paths)
    paths.root.chmod(0o755)
    sha = mirror.ensure_mirror(paths.mirror)
    repo = debrepo.ensure(paths, image.apt_sources())
    # homekube's state (PKI, member lists) describes the cluster on the old hosts; new hosts
    # are a new, empty cluster. A reused lab keeps it.
    shutil.rmtree(paths.cluster_state, ignore_errors=True)
    paths.cluster_state.mkdir(parents=True)
    shutil.rmtree(paths.root / "last-failure", ignore_errors=True)
    lab = Lab(
        dir=paths.root,
        hosts=tuple(LabHost.of(i) for i in range(1, n + 1)),
        key_path=paths.key,
        known_hosts_path=paths.known_hosts,
        mirror_url=settings.MIRROR_URL,
        etcd_sha256=sha,
        config_path=cfg,
    )
    t0 = time.monotonic()
    try:
        OWNER_FILE.write_text(f"{paths.root}\n")
        network.bridge_up()
        network.guard_up()
        services.mirror_up(paths)
        known: list[str] = []
        for h in lab.hosts:
            known.extend(_create_host(paths, h, lab.hosts, repo))
        paths.known_hosts.write_text("".join(known))
        for h in lab.hosts:
            _launch(paths, h.name)
        _write_state(paths, lab)
        log.info("launched %d hosts in %.1f s; waiting for them", n, time.monotonic() - t0)
        for h in lab.hosts:
            _wait_ready(paths, h.name, time.monotonic() + READY_TIMEOUT)
    except BaseException:
        _keep_console_logs(paths)
        if os.environ.get("HOMEKUBE_LAB_KEEP_ON_FAILURE") != "1":
            log.info("tearing the half-started lab down (HOMEKUBE_LAB_KEEP_ON_FAILURE=1 keeps it)")
            _down(paths)
        raise
    log.info("all %d hosts ready in %.1f s", n, time.monotonic() - t0)
    return lab


def _keep_console_logs(paths: LabPaths) -> None:
    """Copy console logs out of the host dirs, which a teardown deletes."""
    dest = paths.root / "last-failure"
    shutil.rmtree(dest, ignore_errors=True)
    for name in _host_dirs(paths):
        src = paths.host_dir(name) / "console.log"
        if src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / f"{name}-console.log")


def _create_host(
    paths: LabPaths, host: LabHost, all_hosts: Sequence[LabHost], repo: debrepo.LabRepo
) -> list[str]:
    """Disk, identity, network and cgroups of one host; returns its known_hosts lines."""
    idx = settings.host_index(host.name)
    d = paths.host_dir(host.name)
    for sub in ("upper", "work", "root", "containers", "containerd"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    root = d / "root"
    if not is_mountpoint(root):
        # /var/lib/containers and /var/lib/containerd are plain-disk binds (see _launch):
        # overlay cannot nest on overlay, and both runtimes' snapshots are overlays.
        run(
            [
                "mount", "-t", "overlay", f"hk-{host.name}", "-o",
                f"lowerdir={paths.base},upperdir={d / 'upper'},workdir={d / 'work'}", str(root),
            ]
        )  # fmt: skip
    (root / "etc/hostname").write_text(f"{host.name}\n")
    (root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
    known = []
    # ed25519 + ecdsa only: RSA keygen costs ~1 s per host and nobody needs it.
    keys: list[tuple[str, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey]] = [
        ("ed25519", ed25519.Ed25519PrivateKey.generate()),
        ("ecdsa", ec.generate_private_key(ec.SECP256R1())),
    ]
    for kind, key in keys:
        public = _write_keypair(key, root / f"etc/ssh/ssh_host_{kind}_key", f"root@{host.name}")
        known.append(f"{host.name},{host.ipv4},{host.ipv6} {public}\n")
    etc_hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for h in all_hosts:
        etc_hosts += [f"{h.ipv4} {h.name}", f"{h.ipv6} {h.name}"]
    (root / "etc/hosts").write_text("\n".join(etc_hosts) + "\n")
    # per slot: the shared base image may have been configured by another slot's lab
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text(f"nameserver {settings.GATEWAY4}\n")
    # per slot too: the repository's address is this slot's bridge
    _write_apt_files(root, repo)
    auth = root / "root/.ssh/authorized_keys"
    auth.write_text(paths.key.with_suffix(".pub").read_text())
    auth.chmod(0o600)
    network.host_net_up(idx)
    cgroups = _make_cgroups(settings.netns_name(idx))
    (d / "cgroups").write_text("".join(f"{c}\n" for c in cgroups))
    return known


def _write_apt_files(root: Path, repo: debrepo.LabRepo) -> None:
    for rel, data in repo.host_files().items():
        f = root / rel.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        f.chmod(0o644)


def _cgroup_mount(controller: str) -> Path | None:
    fs = Path("/sys/fs/cgroup")
    if controller == "":  # the unified (v2) hierarchy: beside v1 in hybrid mode, or alone
        if (fs / "unified").is_dir():
            return fs / "unified"
        return fs if (fs / "cgroup.controllers").exists() else None
    mnt = fs / controller.removeprefix("name=")
    return mnt if mnt.is_dir() else None


def _make_cgroups(name: str) -> list[Path]:
    """Give a host its own cgroup `name` (per slot, like its netns) in every hierarchy.

    Without this, nspawn puts every host's payload at the same path and their systemd
    instances (and kubelets) trample each other's cgroups.
    """
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controller, path = line.split(":", 2)
        mnt = _cgroup_mount(controller)
        if mnt is None:
            continue
        d = mnt / path.strip("/") / name
        d.mkdir(parents=True, exist_ok=True)
        if (d / "cpuset.cpus").exists():  # a new cpuset group starts empty: inherit
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((d.parent / f).read_text())
        dirs.append(d)
    return dirs


def _remove_cgroup_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        # fails while processes are still in it, or for a non-cgroup dir: leave those
        with contextlib.suppress(OSError):
            Path(dirpath).rmdir()


def _leftover_cgroups() -> None:
    """This slot's host cgroups of a crashed run, wherever the caller's cgroup was then."""
    pattern = settings.CGROUP_RE
    for mnt in Path("/sys/fs/cgroup").iterdir():
        if not mnt.is_dir():
            continue
        for dirpath, dirnames, _files in os.walk(mnt):
            for dn in list(dirnames):
                if pattern.match(dn):
                    _remove_cgroup_tree(Path(dirpath) / dn)
                    dirnames.remove(dn)


def _memory_usage(paths: LabPaths, name: str) -> int | None:
    try:
        cgroups = [Path(c) for c in (paths.host_dir(name) / "cgroups").read_text().split()]
    except OSError:
        return None
    # cgroup v1 memory controller first (this machine), then the unified hierarchy
    candidates = [c / "memory.usage_in_bytes" for c in cgroups if "memory" in c.parts]
    candidates += [c / "memory.current" for c in cgroups]
    for f in candidates:
        try:
            return int(f.read_text())
        except (OSError, ValueError):
            continue
    return None


def _nspawn_match(paths: LabPaths, name: str) -> CmdlineMatch:
    root = str(paths.host_dir(name) / "root")
    return lambda argv: Path(argv[0]).name == "systemd-nspawn" and root in argv


def _launcher_match(paths: LabPaths, name: str) -> CmdlineMatch:
    d = str(paths.host_dir(name))
    return lambda argv: _is_launcher(argv) and d in argv


def _is_launcher(argv: list[str]) -> bool:
    # by file name, not full path: a `down` from another checkout must still recognise it
    return any(a.endswith("homekube/lab/launcher.py") for a in argv[1:3])


def _any_nspawn_match(paths: LabPaths) -> CmdlineMatch:
    prefix = str(paths.hosts) + "/"
    return lambda argv: (
        Path(argv[0]).name == "systemd-nspawn" and any(a.startswith(prefix) for a in argv)
    )


def _any_launcher_match(paths: LabPaths) -> CmdlineMatch:
    prefix = str(paths.hosts) + "/"
    return lambda argv: _is_launcher(argv) and any(a.startswith(prefix) for a in argv)


def _launch(paths: LabPaths, name: str) -> None:
    idx = settings.host_index(name)
    d = paths.host_dir(name)
    (d / "stop").unlink(missing_ok=True)
    (d / "containerd").mkdir(exist_ok=True)  # hosts made before containerd had a bind
    network.set_host_cable(idx, plugged=True)
    nspawn = [
        "systemd-nspawn", "-q",
        "-D", str(d / "root"),
        "-M", name, f"--hostname={name}",
        "--kill-signal=SIGRTMIN+3",  # SIGTERM to nspawn = clean poweroff inside
        "--register=no", "--keep-unit",  # no machined / systemd on this machine
        f"--network-namespace-path=/run/netns/{settings.netns_name(idx)}",
        "--private-network",  # with the path above: own netns AND a writable /proc/sys/net
        "--capability=all", "--system-call-filter=@keyring bpf",
        "--bind=/dev/kmsg",
        f"--bind={d / 'containers'}:/var/lib/containers",  # cri-o's storage
        f"--bind={d / 'containerd'}:/var/lib/containerd",  # containerd's
        "--console=read-only",
        image.INIT_PATH,
    ]  # fmt: skip
    env = dict(os.environ)
    if os.environ.get("HOMEKUBE_LAB_SYSCTL_RW") == "1":
        # whole /proc/sys writable: kernel.*/vm.* writes then hit the machine's kernel!
        env["SYSTEMD_NSPAWN_API_VFS_WRITABLE"] = "yes"
    argv = [sys.executable, "-I", str(launcher.__file__), str(d), "--", *nspawn]
    pid = spawn_detached(argv, d / "console.log", env=env)
    write_pid_record(d / "launcher.pid", pid)


def _console_tail(paths: LabPaths, name: str, lines: int = 30) -> str:
    p = paths.host_dir(name) / "console.log"
    try:
        text = p.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(paths: LabPaths, name: str, deadline: float) -> None:
    """Poll until sshd accepts the lab key and systemd finished booting."""
    idx = settings.host_index(name)
    d = paths.host_dir(name)
    ssh = _ssh_argv(paths.key, paths.known_hosts, settings.host_ipv4(idx), timeout=2)
    t0 = time.monotonic()
    last = ""
    while True:
        remaining = deadline - time.monotonic()
        # right after _launch the supervisor may not have exec'd yet (its command line is
        # still its parent's; seen under load): only one that stays unrecognisable has died
        launcher_alive = (
            live_pid(d / "launcher.pid", _launcher_match(paths, name)) is not None
            or time.monotonic() - t0 < LAUNCH_GRACE
        )
        if remaining <= 0 or not launcher_alive:
            why = "did not become ready within" if launcher_alive else "stopped while booting after"
            raise LabError(
                f"{why} {time.monotonic() - t0:.0f} s"
                + (f" (last: {last})" if last else "")
                + f"; its console log ends with:\n{_console_tail(paths, name)}",
                host=name,
                hint=f"full console logs: {d / 'console.log'} (copied to "
                f"{paths.root / 'last-failure'} when the half-started lab is torn down)",
            )
        try:
            cp = subprocess.run(
                [*ssh, "systemctl is-system-running --wait"],
                capture_output=True,
                text=True,
                timeout=max(remaining, 1),
                check=False,
            )
        except subprocess.TimeoutExpired:
            last = "systemd still starting"
            continue
        state = cp.stdout.strip()
        if state in ("running", "degraded"):
            log.info("%s ready (%s) after %.1f s", name, state, time.monotonic() - t0)
            return
        if cp.returncode == 255:  # ssh could not connect (yet)
            last = cp.stderr.strip().splitlines()[-1] if cp.stderr.strip() else "ssh failed"
            time.sleep(0.1)
            continue
        last = f"systemd is {state or cp.stderr.strip()!r}"
        time.sleep(0.2)


def _stop_hosts(paths: LabPaths, names: Sequence[str]) -> None:
    """SIGTERM every nspawn at once (clean poweroff inside), SIGKILL after STOP_GRACE."""
    pending: list[tuple[int, CmdlineMatch, str]] = []
    for name in names:
        d = paths.host_dir(name)
        (d / "stop").touch()
        match = _nspawn_match(paths, name)
        pid = live_pid(d / "nspawn.pid", match)
        if pid and signal_if_match(pid, match, signal.SIGTERM):
            pending.append((pid, match, name))
    deadline = time.monotonic() + STOP_GRACE
    for pid, match, name in pending:
        if wait_gone(pid, match, max(deadline - time.monotonic(), 0)):
            log.info("%s powered off", name)
        else:
            log.warning("%s did not power off in %.0f s: SIGKILL", name, STOP_GRACE)
            signal_if_match(pid, match, signal.SIGKILL)
            wait_gone(pid, match, 5)
    for name in names:  # the supervisor exits right after nspawn; make sure it did
        d = paths.host_dir(name)
        lmatch = _launcher_match(paths, name)
        lpid = live_pid(d / "launcher.pid", lmatch)
        if lpid and not wait_gone(lpid, lmatch, 3):
            terminate(lpid, lmatch, grace=5, what=f"{name} supervisor")
        (d / "nspawn.pid").unlink(missing_ok=True)
        (d / "launcher.pid").unlink(missing_ok=True)


def _down(paths: LabPaths) -> None:
    t0 = time.monotonic()
    names = _host_dirs(paths)
    _stop_hosts(paths, names)
    # processes of a crashed run whose PID files are gone: their cmdline names our hosts dir
    for what, match in (
        ("systemd-nspawn", _any_nspawn_match(paths)),
        ("supervisor", _any_launcher_match(paths)),
    ):
        for pid in find_processes(match):
            log.info("stopping leftover %s (pid %d)", what, pid)
            terminate(pid, match, grace=STOP_GRACE, what=f"leftover {what}")
    owns_network = _owns_network(paths)
    for name in names:
        d = paths.host_dir(name)
        stuck = [m for m in mounts_under(d) if not unmount(m)]
        if stuck:
            log.warning("%s: %s still mounted; leaving %s", name, stuck[0], d)
            continue
        if owns_network:
            network.host_net_down(settings.host_index(name))
        try:
            cgroups = (d / "cgroups").read_text().split()
        except OSError:
            cgroups = []
        for cg in cgroups:
            _remove_cgroup_tree(Path(cg))
        for runtime in (
            Path("/run/systemd/nspawn/propagate"),
            Path("/run/systemd/nspawn/incoming"),
        ):
            shutil.rmtree(runtime / name, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
    for m in mounts_under(paths.hosts):  # mounts of a host dir whose name we did not list
        unmount(m)
    if paths.hosts.is_dir() and not any(paths.hosts.iterdir()):
        paths.hosts.rmdir()
    services.legacy_proxy_down(paths)
    services.mirror_down(paths)
    services.registry_down(paths)
    paths.state_file.unlink(missing_ok=True)
    if owns_network:
        network.leftovers_down()
        _leftover_cgroups()
        if shutil.which("nft"):
            network.guard_down()
        network.bridge_down()
        OWNER_FILE.unlink(missing_ok=True)
    log.info("lab down in %.1f s", time.monotonic() - t0)


def _owns_network(paths: LabPaths) -> bool:
    """False while another lab directory's lab is up: its bridge and namespaces are not ours."""
    try:
        owner = Path(OWNER_FILE.read_text().strip())
    except OSError:
        return True
    return owner == paths.root or not (owner / "lab.json").exists()
