"""The lab's Debian repository: what it holds, when it is rebuilt, what hosts are told."""

from __future__ import annotations

from homekube.components.hostprep import HOST_PACKAGES
from homekube.lab import debrepo, settings
from homekube.lab.image import AptSources
from homekube.osfamily import DEBIAN


def test_every_package_homekube_installs_on_debian_is_in_the_list() -> None:
    for pkg in DEBIAN.packages([*HOST_PACKAGES, "gpg", "etcd-server", "etcd-client"]):
        assert pkg in debrepo.REPO_PACKAGES, pkg
    # kubelet's deb dependencies from Debian
    for pkg in ("conntrack", "socat", "ethtool", "ebtables", "iptables", "iproute2", "mount"):
        assert pkg in debrepo.REPO_PACKAGES, pkg
    assert list(debrepo.REPO_PACKAGES) == sorted(set(debrepo.REPO_PACKAGES))


def test_cache_key_follows_packages_suite_and_base_image() -> None:
    key = debrepo.cache_key(("socat", "conntrack"), "bookworm", '{"config": 3}')
    assert len(key) == 16 and int(key, 16) >= 0
    assert debrepo.cache_key(("conntrack", "socat"), "bookworm", '{"config": 3}') == key
    assert debrepo.cache_key(("socat",), "bookworm", '{"config": 3}') != key
    assert debrepo.cache_key(("socat", "conntrack"), "trixie", '{"config": 3}') != key
    assert debrepo.cache_key(("socat", "conntrack"), "bookworm", '{"config": 4}') != key


def test_hosts_get_a_signed_by_source_of_their_own_slot_and_bounded_apt() -> None:
    repo = debrepo.LabRepo(dir=settings.DEFAULT_CACHE_DIR, key="0" * 16, keyring=b"K", debs=())
    files = repo.host_files()
    assert files[debrepo.KEYRING_ON_HOST] == b"K"
    source = files[debrepo.SOURCES_ON_HOST].decode().splitlines()[-1]
    assert source == (
        f"deb [signed-by={debrepo.KEYRING_ON_HOST}] http://{settings.GATEWAY4}:"
        f"{settings.MIRROR_PORT}/debian/ bookworm main"
    )
    conf = files[debrepo.APT_CONF_ON_HOST].decode()
    assert 'Acquire::http::Timeout "10";' in conf and 'Acquire::Retries "3";' in conf
    assert "Proxy" not in conf


def test_closure_script_talks_to_the_machines_mirror_and_bounds_each_step() -> None:
    from pathlib import Path

    src = AptSources("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")
    script = debrepo.closure_script(
        Path("/c/base"), Path("/t/upper"), Path("/t/work"), Path("/t/mnt"), src
    )
    assert "lowerdir=/c/base,upperdir=/t/upper,workdir=/t/work /t/mnt" in script
    assert "'deb http://deb.debian.org/debian bookworm main'" in script
    assert "'deb http://deb.debian.org/debian-security bookworm-security main'" in script
    assert f"timeout -k 5 {debrepo.UPDATE_TIMEOUT} chroot /t/mnt apt-get" in script
    assert f"timeout -k 5 {debrepo.DOWNLOAD_TIMEOUT} chroot /t/mnt" in script
    assert "install --download-only " + " ".join(debrepo.REPO_PACKAGES) in script
