"""Per-OS configurers: each family's commands, and no OS branch anywhere else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from homekube.osfamily import DEBIAN, FAMILIES, RHEL, family_named

SRC = Path(__file__).resolve().parents[2] / "src" / "homekube"


def test_version_pins_as_each_package_manager_spells_them() -> None:
    assert DEBIAN.version_pin("kubeadm", "1.36.*") == "kubeadm=1.36.*"
    assert RHEL.version_pin("kubeadm", "1.36.*") == "kubeadm-1.36.*"


def test_holding_is_apt_mark_on_debian_and_the_repository_exclude_on_el() -> None:
    assert DEBIAN.hold_command(["kubelet", "kubeadm"]) == "apt-mark hold 'kubelet' 'kubeadm' >/dev/null"
    assert RHEL.hold_command(["kubelet"]) is None
    cmd, _ = DEBIAN.install_held_command(["kubeadm=1.36.*"], ["kubeadm"])
    assert cmd.endswith("'kubeadm=1.36.*' && apt-mark hold 'kubeadm' >/dev/null")
    cmd, _ = RHEL.install_held_command(["kubeadm-1.36.*", "cri-o-1.36.*"], ["kubeadm"])
    assert cmd == "dnf install -y -q --disableexcludes=kubernetes 'cri-o-1.36.*' 'kubeadm-1.36.*'"


def test_an_upgrade_unholds_and_holds_again_whatever_the_install_did() -> None:
    cmd, how = DEBIAN.upgrade_held_command(["kubeadm"], ["kubeadm=1.37.*"])
    lines = cmd.splitlines()
    assert lines[1] == "apt-mark unhold 'kubeadm' >/dev/null"
    assert "--allow-change-held-packages" in lines[2] and lines[2].endswith("|| rc=$?")
    assert lines[3:] == ["apt-mark hold 'kubeadm' >/dev/null", "exit $rc"]
    assert how == "unhold, install, hold again"
    cmd, _ = RHEL.upgrade_held_command(["kubeadm"], ["kubeadm-1.37.*"])
    assert cmd == "dnf install -y -q --disableexcludes=kubernetes 'kubeadm-1.37.*'"


def test_repositories_keyrings_and_extras_per_family() -> None:
    deb = DEBIAN.repository("kubernetes", "Kubernetes", "https://m/kubernetes/v1.36/", "")
    assert deb.keyring == "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
    assert deb.key_url == "https://m/kubernetes/v1.36/deb/Release.key"
    el = RHEL.repository("kubernetes", "Kubernetes", "https://m/kubernetes/v1.36/", "")
    assert el.keyring is None and "exclude=kubelet kubeadm" in el.content
    assert "exclude=" not in RHEL.repository("cri-o", "CRI-O", "https://m/cri-o/v1.36/", "").content
    assert DEBIAN.packages(DEBIAN.keyring_tools) == ["gpg"] and RHEL.keyring_tools == ()
    assert RHEL.packages(RHEL.node_extras) == ["container-selinux"] and DEBIAN.node_extras == ()


def test_family_named() -> None:
    assert family_named("debian") is DEBIAN and family_named(RHEL) is RHEL
    assert set(FAMILIES) == {"debian", "rhel"}
    with pytest.raises(ValueError, match="unknown OS family"):
        family_named("arch")  # type: ignore[arg-type]


#: `fam.family == "debian"`, `os_family != 'rhel'`, `os.id == "ubuntu"`: an OS branch
_OS_BRANCH = re.compile(r"""\b(family|os_family|os\.id)\s*[!=]=\s*["'](debian|rhel|ubuntu|rocky|almalinux|centos)""")


def test_no_os_branch_outside_the_configurers() -> None:
    found = [f"{p.relative_to(SRC)}:{n}: {line.strip()}"
             for p in sorted(SRC.rglob("*.py")) if p.name != "osfamily.py"
             for n, line in enumerate(p.read_text().splitlines(), start=1) if _OS_BRANCH.search(line)]
    assert found == []
