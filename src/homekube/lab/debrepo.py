"""The lab's Debian repository: exactly the .debs lab hosts may install, signed and local.

Lab hosts cannot reach Debian's archive. They used to reach it through an apt-cacher-ng proxy
on the bridge, and `apt-get update` sometimes hung forever behind it (issue 10: a connection
in CLOSE-WAIT, concurrent index refreshes inside the proxy). Now the lab computes, once per
base image, the closure of every package homekube or the tests install on Debian hosts
(REPO_PACKAGES), downloads those .debs on this machine, and writes them as a signed dists/
repository (aptrepo) that the lab's mirror server serves at `<mirror>/debian/`. Hosts trust
only the lab's key for it (`signed-by`), and have no other apt source.

The closure is what apt itself decides against the cached base image: `apt-get install
--download-only` in a chroot of a throw-away overlay of that image (inside a private mount
namespace, so nothing stays mounted whatever happens), talking directly to this machine's
Debian mirror. So the repository holds what a host needs beyond the image, at versions that
fit what the image has installed.

Cache: <HOMEKUBE_LAB_CACHE>.apt-repo/<key>/repo, key = hash of (REPO_PACKAGES, suite, the base
image's marker). A new key means a new build (tmp dir + rename); old keys are pruned.
The signing key lives in <HOMEKUBE_LAB_CACHE>.apt-repo/gnupg (0700), generated on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from homekube.components.hostprep import HOST_PACKAGES
from homekube.lab import aptrepo, image, settings
from homekube.lab.image import AptSources
from homekube.lab.system import LabError, exclusive_lock, log, run
from homekube.osfamily import DEBIAN as _DEBIAN

#: Every package lab hosts may install, beyond the base image: host preparation's, the ones
#: `etcd.install: package` and the tests install, and what the Kubernetes packages
#: (kubelet, kubeadm, cri-o debs) depend on from Debian. Add a name here when a test or a
#: component installs something new; the repository is rebuilt on the next `lab up`.
REPO_PACKAGES: tuple[str, ...] = tuple(
    sorted(
        {
            *_DEBIAN.packages(HOST_PACKAGES),  # host preparation
            *_DEBIAN.packages(["gpg", "etcd-server", "etcd-client"]),  # keys, etcd from packages
            "gnupg",
            "keepalived",  # kubernetes.endpoint's virtual address (components/endpoint.py)
            "curl",
            "python3-apt",  # Ansible's apt module (bench/run.py's comparison) installs it
            # kubelet's and kubeadm's deb dependencies (pkgs.k8s.io), and what cri-o needs
            "conntrack",
            "ebtables",
            "ethtool",
            "iproute2",
            "iptables",
            "kmod",
            "mount",
            "socat",
            "util-linux",
            "libgpgme11",
            "libseccomp2",
        }
    )
)

#: Under the lab mirror: http://<bridge>:<port>/debian/
MIRROR_SUBDIR = "debian"
KEYRING_ON_HOST = "/etc/apt/keyrings/homekube-lab.gpg"
SOURCES_ON_HOST = "/etc/apt/sources.list.d/homekube-lab.list"
APT_CONF_ON_HOST = "/etc/apt/apt.conf.d/01homekube-lab"
# The server is on the bridge: a few seconds without an answer means it is gone, and a retry
# is cheap. (apt's default waits 120 s and never retries.)
APT_CONF = 'Acquire::http::Timeout "10";\nAcquire::Retries "3";\n'

# Seconds for each step of a build; each one fails with a LabError naming it.
UPDATE_TIMEOUT = 300
DOWNLOAD_TIMEOUT = 900
BUILD_TIMEOUT = UPDATE_TIMEOUT + DOWNLOAD_TIMEOUT + 120


@dataclass(frozen=True)
class LabRepo:
    """The built repository and what a host needs to trust it."""

    dir: Path
    key: str
    keyring: bytes
    debs: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"{settings.MIRROR_URL}{MIRROR_SUBDIR}/"

    def host_files(self) -> dict[str, bytes]:
        """Files to write into a host's root: key, source and apt settings (per slot)."""
        line = aptrepo.source_line(self.url, key_path=KEYRING_ON_HOST, suite=settings.SUITE)
        return {
            KEYRING_ON_HOST: self.keyring,
            SOURCES_ON_HOST: f"# homekube lab: the lab's signed Debian repository\n{line}\n".encode(),
            APT_CONF_ON_HOST: APT_CONF.encode(),
        }


def cache_dir(paths: settings.LabPaths) -> Path:
    # a dot, never a dash: `lab-base-<name>` is how people name their own HOMEKUBE_LAB_CACHE
    return paths.base.with_name(paths.base.name + ".apt-repo")


def cache_key(packages: tuple[str, ...], suite: str, base_marker: str) -> str:
    """What the repository depends on; a change of any of it means a rebuild."""
    blob = json.dumps({"packages": sorted(packages), "suite": suite, "base": base_marker})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _marker_text(base: Path) -> str:
    try:
        return (base / image.MARKER).read_text()
    except OSError as e:
        raise LabError(f"the base image {base} has no marker; build it first") from e


def ensure(paths: settings.LabPaths, sources: AptSources) -> LabRepo:
    """Build the repository unless cached, and link it into the lab mirror as `debian/`."""
    root = cache_dir(paths)
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(REPO_PACKAGES, settings.SUITE, _marker_text(paths.base))
    signing = aptrepo.SigningKey.ensure(root / "gnupg")
    built = root / key
    # another slot sharing this cache may be building the same key: wait for it
    with exclusive_lock(root / ".lock", timeout=BUILD_TIMEOUT):
        if not (built / "repo" / "dists").is_dir():
            _build(paths.base, sources, signing, root, key)
        _prune(root, keep=key)
    info = json.loads((built / "packages.json").read_text())
    _link(paths.mirror / MIRROR_SUBDIR, built / "repo")
    return LabRepo(built / "repo", key, signing.keyring(), tuple(info["debs"]))


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.readlink() == target:
        return
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def _prune(root: Path, keep: str) -> None:
    """Remove other keys' repositories and crashed builds (called with the lock held)."""
    for d in root.iterdir():
        old_key = (
            len(d.name) == 16 and d.name != keep and all(c in "0123456789abcdef" for c in d.name)
        )
        if d.is_dir() and (old_key or d.name.startswith(".build-")):
            log.info("removing the lab's old Debian repository %s", d)
            shutil.rmtree(d, ignore_errors=True)


def closure_script(base: Path, upper: Path, work: Path, mnt: Path, sources: AptSources) -> str:
    """Shell run in a private mount namespace: apt in a chroot of an overlay of `base`."""
    q = shlex.quote
    lines = [
        f"deb {sources.debian} {settings.SUITE} main",
        f"deb {sources.debian} {settings.SUITE}-updates main",
    ]
    if sources.security:
        lines.append(f"deb {sources.security} {settings.SUITE}-security main")
    apt_opts = (
        "-q -o Dpkg::Use-Pty=0 -o Acquire::Retries=3 -o Acquire::http::Timeout=30"
        " -o Acquire::https::Timeout=30"
    )
    pkgs = " ".join(q(p) for p in REPO_PACKAGES)
    m = q(str(mnt))
    return f"""\
set -eu
mount -t overlay hk-apt-closure -o lowerdir={q(str(base))},upperdir={q(str(upper))},workdir={q(str(work))} {m}
mount --bind /dev {m}/dev
mount -t proc proc {m}/proc
rm -f {m}/etc/apt/sources.list.d/* {m}/etc/apt/apt.conf.d/01homekube-lab*
printf '%s\\n' {" ".join(q(x) for x in lines)} > {m}/etc/apt/sources.list
rm -f {m}/etc/resolv.conf
cat /etc/resolv.conf > {m}/etc/resolv.conf
step() {{ echo "homekube-step: $1" >&2; }}
step "apt-get update (against {sources.debian})"
timeout -k 5 {UPDATE_TIMEOUT} chroot {m} apt-get {apt_opts} update >&2 || {{
    rc=$?; [ $rc -ne 124 ] || echo "apt-get update did not finish within {UPDATE_TIMEOUT} s" >&2
    exit $rc; }}
step "apt-get install --download-only ({len(REPO_PACKAGES)} packages)"
DEBIAN_FRONTEND=noninteractive timeout -k 5 {DOWNLOAD_TIMEOUT} chroot {m} \\
    apt-get {apt_opts} -y install --download-only {pkgs} >&2 || {{
    rc=$?; [ $rc -ne 124 ] || echo "the download did not finish within {DOWNLOAD_TIMEOUT} s" >&2
    exit $rc; }}
"""


def _build(
    base: Path, sources: AptSources, signing: aptrepo.SigningKey, root: Path, key: str
) -> None:
    t0 = time.monotonic()
    log.info(
        "building the lab's Debian repository (%d packages and what they need beyond the "
        "base image, from %s)",
        len(REPO_PACKAGES),
        sources.debian,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
    try:
        upper, work, mnt = tmp / "upper", tmp / "work", tmp / "mnt"
        for d in (upper, work, mnt):
            d.mkdir()
        cp = run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             closure_script(base, upper, work, mnt, sources)],
            timeout=BUILD_TIMEOUT,
            check=False,
            step="computing the lab's Debian packages",
        )  # fmt: skip
        if cp.returncode != 0:
            steps = [ln for ln in cp.stderr.splitlines() if ln.startswith("homekube-step: ")]
            where = steps[-1].removeprefix("homekube-step: ") if steps else "mounting the overlay"
            tail = "\n".join(cp.stderr.strip().splitlines()[-15:])
            raise LabError(
                f"building the lab's Debian repository: {where} failed (exit {cp.returncode}):"
                f"\n{tail}",
                hint="the machine must reach its Debian mirror once per base image "
                "(HOMEKUBE_LAB_APT_MIRROR picks another)",
            )
        debs = sorted((upper / "var/cache/apt/archives").glob("*.deb"))
        aptrepo.write_dists_repo(debs, tmp / "repo", signing, suite=settings.SUITE)
        shutil.rmtree(upper, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        mnt.rmdir()
        names = sorted(p.name for p in (tmp / "repo/pool/main").iterdir())
        size = sum(p.stat().st_size for p in (tmp / "repo/pool/main").iterdir())
        info = {"packages": list(REPO_PACKAGES), "debs": names, "bytes": size}
        (tmp / "packages.json").write_text(json.dumps(info, indent=1) + "\n")
        tmp.chmod(0o755)
        tmp.rename(root / key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "lab Debian repository: %d .debs, %.1f MiB, built in %.1f s",
        len(names),
        size / 2**20,
        time.monotonic() - t0,
    )
