"""Parsers against the facts script's output on Debian 12 (captured), Ubuntu 24.04 and Rocky 9."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from homekube.components.base import Context, LocalState
from homekube.components.hostprep import HostPrepPhase
from homekube.config.loader import load_text
from homekube.facts.base import complete, parse_all
from homekube.facts.host import HostFacts, build_host_facts
from homekube.facts.system import facts_for
from homekube.plan.model import Change
from tests.facts.capture import NONCE, PROBES, script

HERE = Path(__file__).parent / "captured"
MARKER = script()[1]


def load(name: str) -> HostFacts:
    text = (HERE / name).read_text()
    assert complete(text, MARKER)
    return build_host_facts("h", parse_all(facts_for(PROBES), text, MARKER))


def test_marker_is_stable() -> None:
    assert NONCE in MARKER


def test_debian12_captured() -> None:
    f = load("debian-12.txt")
    assert (f.os.id, f.os.version_id, f.os.family) == ("debian", "12", "debian")
    assert f.arch == "x86_64" and f.cpus == 2 and f.memory.total > 1024**3
    assert f.cgroup == 1  # the lab machines boot cgroup v1 (hybrid)
    assert f.swaps == [] and all(e.fstype != "swap" for e in f.fstab)
    assert f.has_address("10.77.0.11") and f.has_address("fd77::11")
    assert f.modules == {"br_netfilter": "builtin", "ip_tables": "missing", "overlay": "builtin"}
    assert f.sysctls["net.ipv4.ip_forward"].value == "1" and f.sysctls["net.ipv4.ip_forward"].writable
    assert f.sysctls["kernel.pid_max"].writable is False
    assert f.sysctls["net.no.such.key"].value is None
    conf = f.file("/etc/sysctl.d/90-homekube.conf")
    assert conf is not None and conf.mode == 0o644 and conf.content and b"ip_forward = 1" in conf.content
    key = f.file("/etc/kubernetes/pki/etcd/server.key")
    assert key is not None and key.content is None and key.mode == 0o600  # secrets: hash only
    assert f.file("/etc/etcd") is not None and f.file("/etc/etcd").kind == "dir"  # type: ignore[union-attr]
    assert f.file("/nonexistent") is None
    assert f.unit("etcd.service").is_active and f.unit("etcd.service").is_enabled
    assert f.unit("sshd.service").is_active  # alias of ssh.service on Debian
    assert not f.unit("NetworkManager.service").exists
    assert f.installed("socat") and not f.installed("iproute")
    assert {"ip", "iptables", "mount", "nsenter"} <= f.commands
    assert f.disk["/var/lib/etcd"] > 1024**3


def test_ubuntu2404_composed() -> None:
    f = load("ubuntu-24.04.txt")
    assert (f.os.id, f.os.version_id, f.os.family) == ("ubuntu", "24.04", "debian")
    assert f.cgroup == 2
    assert [s.name for s in f.swaps] == ["/swap.img"]
    assert [e.spec for e in f.fstab if e.fstype == "swap"] == ["/swap.img"]
    assert f.modules["br_netfilter"] == "loadable"
    assert f.sysctls["net.bridge.bridge-nf-call-iptables"].value is None
    assert f.has_address("2001:db8::54")
    assert f.unit("ssh.service").is_active and not f.unit("firewalld.service").exists


def test_rocky9_composed() -> None:
    f = load("rocky-9.txt")
    assert (f.os.id, f.os.major, f.os.family) == ("rocky", "9", "rhel")
    assert f.installed("iptables-nft") and f.installed("iproute") and not f.installed("socat")
    assert f.unit("firewalld.service").is_active and f.unit("NetworkManager.service").is_active
    assert f.unit("sshd.service").is_active and not f.unit("ssh.service").exists
    assert [e.spec for e in f.fstab if e.fstype == "swap"] == ["/dev/mapper/rl-swap"]
    assert f.memory.total < 4 * 1024**3


CFG = load_text("""\
name: t
kubernetes: {version: "1.36"}
network: {pods: [10.42.0.0/16, fd42:42::/56], services: [10.96.0.0/16, fd42:96::/112]}
hosts:
  - {name: h, address: 192.0.2.54, address6: "2001:db8::54", roles: [control-plane, etcd, worker]}
""")


def plan(f: HostFacts) -> dict[str, Change]:
    steps = HostPrepPhase().plan(Context(CFG, {"h": f}, LocalState(), datetime(2026, 11, 25, tzinfo=UTC)))
    return {s.resource: s for s in steps if isinstance(s, Change)}


@pytest.mark.parametrize("name", ["ubuntu-24.04.txt", "rocky-9.txt"])
def test_host_prep_plan_on_other_distros(name: str) -> None:
    f = load(name)
    changes = plan(f)
    assert "swapoff -a" in changes["swap"].actions[0].describe()
    assert "swap" in changes["fstab swap"].summary
    assert "modprobe br_netfilter" in changes["module br_netfilter"].actions[0].describe()
    # net.bridge.* appears once br_netfilter is loaded: set in the same apply, not skipped
    assert "after loading its module" in changes["sysctl net.bridge.bridge-nf-call-iptables"].summary
    pk = changes["packages"].actions[0].describe()
    if f.os.family == "rhel":
        assert "dnf install" in pk and "conntrack-tools" in pk and "socat" in pk
        assert "disable --now firewalld" in changes["firewalld"].actions[0].describe()
        assert "file /etc/NetworkManager/conf.d/calico.conf" in changes
        assert "modprobe overlay" in changes["module overlay"].actions[0].describe()
    else:
        assert "apt-get install" in pk and "conntrack" in pk
        assert "firewalld" not in changes and "file /etc/NetworkManager/conf.d/calico.conf" not in changes
