"""The lab's hosts behave like real servers, and the lab cleans up after itself.

These tests talk to hosts with plain OpenSSH (host_exec), never with homekube's transport, so
a bug in the transport cannot hide a bug in the lab or the other way round. The destructive
tests (power cycles, resize, crash clean-up) come last and leave the session's lab as they
found it: three running hosts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from homekube import lab as hklab
from homekube.cli.lab_cmd import app as lab_app
from homekube.lab import settings
from tests.rig.helpers import sh

pytestmark = pytest.mark.rig

HOSTS = ["h1", "h2", "h3"]
# python3 -c PROBE ADDR PORT: prints "connected" or the error's class, then the seconds taken
CONNECT_PROBE = """
import socket, sys, time
t = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("connected", round(time.monotonic() - t, 3))
except OSError as e:
    print(type(e).__name__, round(time.monotonic() - t, 3))
"""


def machine(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


# --------------------------------------------------------------------------- identity, ssh


def test_known_hosts_lists_every_host_with_its_real_keys(lab: hklab.Lab) -> None:
    lines = [ln.split() for ln in lab.known_hosts_path.read_text().splitlines() if ln.strip()]
    for h in lab.hosts:
        entries = {(ln[1], ln[2]) for ln in lines if ln[0] == f"{h.name},{h.ipv4},{h.ipv6}"}
        assert {kind for kind, _ in entries} == {"ssh-ed25519", "ecdsa-sha2-nistp256"}
        real = sh(h.name, "cat /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub")
        assert {tuple(ln.split()[:2]) for ln in real.splitlines()} == entries
    # every host has its own keys: identical keys would make strict checking meaningless
    assert len({ln[2] for ln in lines}) == len(lines)
    assert lab.key_path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("name", HOSTS)
def test_ssh_by_ipv6_with_strict_host_key_checking(lab: hklab.Lab, name: str) -> None:
    cp = subprocess.run(
        [*lab.ssh_argv(name, ipv6=True), "hostname; ip -6 -br addr show dev eth0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.splitlines()[0] == name
    assert f"{lab.host(name).ipv6}/64" in cp.stdout


def test_unknown_host_key_is_refused(lab: hklab.Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [a.replace(str(lab.known_hosts_path), str(empty)) for a in lab.ssh_argv("h1")]
    cp = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30, check=False)
    assert cp.returncode == 255
    assert "host key verification failed" in cp.stderr.lower()


# --------------------------------------------------------------------------- like a server


@pytest.mark.parametrize("name", HOSTS)
def test_systemd_is_running(lab: hklab.Lab, name: str) -> None:
    assert sh(name, "systemctl is-system-running --wait").strip() == "running"
    assert sh(name, "ps -p 1 -o comm=").strip() == "systemd"
    # per-host identity written at up time
    assert sh(name, "hostname").strip() == name
    assert len(sh(name, "cat /etc/machine-id").strip()) == 32


def test_machine_ids_differ(lab: hklab.Lab) -> None:
    ids = {sh(h, "cat /etc/machine-id").strip() for h in HOSTS}
    assert len(ids) == len(HOSTS)


def test_a_unit_can_be_enabled_and_started(lab: hklab.Lab) -> None:
    unit = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
    out = sh(
        "h2",
        f"printf '{unit}' > /etc/systemd/system/lab-probe.service && systemctl daemon-reload"
        " && systemctl enable --now lab-probe.service && systemctl is-active lab-probe.service"
        " && systemctl is-enabled lab-probe.service",
    )
    assert out.split() == ["active", "enabled"]
    sh(
        "h2",
        "systemctl disable --now lab-probe.service && rm /etc/systemd/system/lab-probe.service",
    )


def test_net_sysctls_are_writable_per_host(lab: hklab.Lab) -> None:
    before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    sh("h2", "sysctl -q -w net.ipv4.ip_forward=0")  # other tests may have prepared h2
    keys = [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
    ]
    sh("h1", "sysctl -q -w " + " ".join(f"{k}=1" for k in keys))
    assert sh("h1", "sysctl -n " + " ".join(keys)).split() == ["1"] * len(keys)
    # per network namespace: the machine and the other hosts are untouched
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before
    assert sh("h2", "sysctl -n net.ipv4.ip_forward").strip() == "0"
    sh("h1", "sysctl -q -w net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0")


def test_kernel_sysctls_are_read_only(lab: hklab.Lab) -> None:
    # writes the current value back, so nothing changes even if the check were wrong
    cp = hklab.host_exec("h1", "sysctl -w kernel.pid_max=$(sysctl -n kernel.pid_max)")
    assert cp.returncode != 0
    assert "permission denied" in cp.stderr.lower() or "read-only" in cp.stderr.lower()


def test_overlay_mounts_work_in_var_lib_containers(lab: hklab.Lab) -> None:
    out = sh(
        "h3",
        "set -e; t=/var/lib/containers/lab-t; rm -rf $t; mkdir -p $t/l $t/u $t/w $t/m;"
        " echo lower > $t/l/f;"
        " mount -t overlay o -o lowerdir=$t/l,upperdir=$t/u,workdir=$t/w $t/m;"
        " cat $t/m/f; echo upper > $t/m/g; umount $t/m; cat $t/u/g; rm -rf $t",
    )
    assert out.split() == ["lower", "upper"]


# --------------------------------------------------------------------------- network


def test_hosts_reach_each_other_over_ipv4_ipv6_and_by_name(lab: hklab.Lab) -> None:
    h2, h3 = lab.host("h2"), lab.host("h3")
    sh("h1", f"ping -c1 -W2 {h2.ipv4} && ping -c1 -W2 {h2.ipv6}")
    sh("h1", f"ping -4 -c1 -W2 h3 && ping -6 -c1 -W2 h3 && getent ahosts h3 | grep -q {h3.ipv6}")
    # a TCP service across hosts, both families
    for addr in (h2.ipv4, h2.ipv6):
        out = sh("h3", f"python3 -c '{CONNECT_PROBE}' {addr} 22")
        assert out.split()[0] == "connected", out
    hosts = sh("h1", "cat /etc/hosts")
    for h in lab.hosts:
        assert f"{h.ipv4} {h.name}" in hosts
        assert f"{h.ipv6} {h.name}" in hosts


def test_hosts_cannot_reach_the_outside(lab: hklab.Lab) -> None:
    # We never send a packet to a non-lab address, not even to prove it is blocked (the
    # machine's uplink is 192.0.2.0/24 here): the guard is checked by reading the ruleset and
    # the routing decision, and the reject path is exercised inside the lab subnet.
    table = machine("nft", "list", "table", "inet", settings.NFT_TABLE)
    assert table.returncode == 0
    rules = table.stdout
    assert "hook forward" in rules and "drop" in rules
    assert "reject" in rules
    route = sh("h1", "ip route get 192.0.2.1")
    assert f"via {settings.GATEWAY4} dev eth0" in route
    # an unassigned lab address: nothing answers, and the probe gives up quickly
    out = sh("h1", f"python3 -c '{CONNECT_PROBE}' {settings.NET4_PREFIX}.250 80").split()
    assert out[0] != "connected"
    # apt has no way out either: its one source is the lab's repository on the bridge, and
    # the server there is a file server, not a proxy that would fetch a Debian URL for a host
    sources = sh("h1", "grep -rhs '^deb' /etc/apt/sources.list /etc/apt/sources.list.d/ || true")
    assert [ln.split()[2] for ln in sources.splitlines()] == [f"{settings.MIRROR_URL}debian/"]
    assert sh("h1", "apt-config dump Acquire::http::Proxy Acquire::https::Proxy") == ""
    code = sh(
        "h1",
        f"curl -s -o /dev/null -w '%{{http_code}}' -x {settings.MIRROR_URL}"
        " http://deb.debian.org/debian/dists/bookworm/InRelease || true",
    )
    assert code == "404"


# --------------------------------------------------------------------------- mirror, apt


def test_mirror_serves_the_etcd_tarball_with_the_right_sha256(lab: hklab.Lab) -> None:
    assert lab.mirror_url == f"http://{settings.GATEWAY4}:{8077 + settings.SLOT}/" == hklab.mirror_url()
    base = f"{lab.mirror_url}etcd/v3.5.1"
    got = sh("h2", f"curl -sSf {base}/etcd-v3.5.1-linux-amd64.tar.gz | sha256sum").split()[0]
    assert got == lab.etcd_sha256
    sums = sh("h2", f"curl -sSf {base}/SHA256SUMS")
    assert sums == f"{lab.etcd_sha256}  etcd-v3.5.1-linux-amd64.tar.gz\n"
    # the binaries from the tarball run on a host
    out = sh(
        "h2",
        f"cd /tmp && curl -sSf {base}/etcd-v3.5.1-linux-amd64.tar.gz | tar -xz"
        " && etcd-v3.5.1-linux-amd64/etcd --version && etcd-v3.5.1-linux-amd64/etcdctl version"
        " && rm -rf etcd-v3.5.1-linux-amd64",
    )
    assert "etcd Version: 3.5.1" in out
    assert "etcdctl version: 3.5.1" in out


def test_etcd_tarball_is_laid_out_like_upstream(lab: hklab.Lab) -> None:
    path = lab.dir / "mirror/etcd/v3.5.1/etcd-v3.5.1-linux-amd64.tar.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == lab.etcd_sha256
    with tarfile.open(path) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
    top = "etcd-v3.5.1-linux-amd64"
    assert set(members) == {top, f"{top}/etcd", f"{top}/etcdctl", f"{top}/etcdutl"}
    assert members[top].isdir()
    for b in ("etcd", "etcdctl", "etcdutl"):
        assert members[f"{top}/{b}"].isfile()
        assert members[f"{top}/{b}"].mode == 0o755
    assert hklab.etcd_tarball_sha256() == lab.etcd_sha256  # reproducible: rebuilt = same


def test_apt_installs_from_the_lab_repository(lab: hklab.Lab) -> None:
    # apt's own defaults here (no --no-install-recommends), as a person at the host would type
    out = hklab.host_exec("h3", "apt-get update 2>&1", timeout=120)
    assert out.returncode == 0, out.stdout
    assert f"{settings.MIRROR_URL}debian bookworm InRelease" in out.stdout
    assert "W:" not in out.stdout and "E:" not in out.stdout, out.stdout
    sh("h3", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null", timeout=300)
    try:
        status = sh("h3", "dpkg-query -W -f='${Status}' etcd-server")
        assert status == "install ok installed"
        assert "etcd Version: 3.4" in sh("h3", "etcd --version")
        origin = sh("h3", "apt-cache policy etcd-server")
        assert f"500 {settings.MIRROR_URL}debian bookworm/main amd64 Packages" in origin
    finally:  # leave no etcd on :2379 behind for homekube's own etcd tests
        sh(
            "h3",
            "systemctl disable --now etcd 2>/dev/null; DEBIAN_FRONTEND=noninteractive"
            " apt-get purge -y -qq --autoremove etcd-server etcd-client >/dev/null;"
            " rm -rf /var/lib/etcd; ! ss -ltn | grep -q ':2379 '",
            timeout=300,
        )


def test_every_lab_package_installs_on_a_host(lab: hklab.Lab) -> None:
    """The repository holds the whole closure: apt can install every listed package at once."""
    from homekube.lab import debrepo

    cp = hklab.host_exec(
        "h2",
        "apt-get update -qq && apt-get install -s --no-install-recommends "
        + " ".join(debrepo.REPO_PACKAGES),
        timeout=120,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "E:" not in cp.stderr
    # the simulation installs only from the lab repository (every Inst line names it)
    inst = [ln for ln in cp.stdout.splitlines() if ln.startswith("Inst ")]
    assert inst and all("homekube lab" in ln for ln in inst), inst


def test_apt_accepts_the_repository_only_with_the_lab_key(lab: hklab.Lab) -> None:
    """InRelease is signed by the lab key; with any other key apt refuses the repository."""
    keyring = "/etc/apt/keyrings/homekube-lab.gpg"
    line = sh("h1", "cat /etc/apt/sources.list.d/homekube-lab.list").splitlines()[-1]
    assert line == f"deb [signed-by={keyring}] {settings.MIRROR_URL}debian/ bookworm main"
    base = f"{settings.MIRROR_URL}debian/dists/bookworm"
    good = sh("h1", f"curl -sSf {base}/InRelease | gpgv --keyring {keyring} - 2>&1")
    assert "Good signature" in good
    detached = sh(
        "h1",
        f"cd /tmp && curl -sSfO {base}/Release && curl -sSfO {base}/Release.gpg"
        f" && gpgv --keyring {keyring} Release.gpg Release 2>&1; rm -f Release Release.gpg",
    )
    assert "Good signature" in detached
    # the same source trusting Debian's archive key instead: refused, nothing indexed
    wrong = line.replace(keyring, "/usr/share/keyrings/debian-archive-keyring.gpg")
    cp = hklab.host_exec(
        "h1",
        f"d=$(mktemp -d); chmod 755 $d; mkdir -p $d/lists/partial; echo '{wrong}' > $d/src.list;"
        " apt-get update -o Dir::Etc::SourceList=$d/src.list -o Dir::Etc::SourceParts=/nonexistent"
        " -o Dir::State::Lists=$d/lists 2>&1; echo rc=$?; ls $d/lists; rm -rf $d",
        timeout=120,
    )
    assert "NO_PUBKEY" in cp.stdout and "is not signed" in cp.stdout, cp.stdout
    assert "_Packages" not in cp.stdout  # no index was accepted


# --------------------------------------------------------------------------- config, CLI


def test_written_config_points_at_the_lab(lab: hklab.Lab, lab_config: Path) -> None:
    text = lab_config.read_text()
    assert text.startswith("# homekube lab: 3 local test hosts")
    doc = YAML(typ="safe").load(text)
    assert doc["name"] == "lab"
    assert doc["kubernetes"] == {
        "enabled": False,
        "version": "1.36",
        "controlPlaneEndpoint": "h1:6443",
    }
    assert doc["etcd"] == {"install": "tarball", "version": "3.5.1", "sha256": lab.etcd_sha256}
    assert doc["artifacts"] == {"mirror": lab.mirror_url}
    assert doc["ssh"] == {
        "user": "root",
        "key": str(lab.key_path),
        "knownHosts": str(lab.known_hosts_path),
    }
    assert Path(doc["ssh"]["key"]).is_file()
    assert doc["state"] == {"dir": str(lab.dir / "state")}
    assert doc["hosts"] == [
        {"name": "h1", "address": settings.host_ipv4(1), "address6": settings.host_ipv6(1),
         "roles": ["control-plane", "etcd", "worker"]},
        {"name": "h2", "address": settings.host_ipv4(2), "address6": settings.host_ipv6(2), "roles": ["worker"]},
        {"name": "h3", "address": settings.host_ipv4(3), "address6": settings.host_ipv6(3), "roles": ["worker"]},
    ]  # fmt: skip


def test_status_api_and_cli(lab: hklab.Lab) -> None:
    st = hklab.status()
    assert st.up and st.mirror_running
    assert st.apt_repo_url == f"{settings.MIRROR_URL}debian/"
    assert [(h.name, h.ipv4, h.ipv6, h.state) for h in st.hosts] == [
        (h.name, h.ipv4, h.ipv6, "running") for h in lab.hosts
    ]
    assert all(h.memory_bytes and h.memory_bytes < 512 * 2**20 for h in st.hosts)
    result = CliRunner().invoke(lab_app, ["status"])
    assert result.exit_code == 0, result.output
    for h in lab.hosts:
        assert h.name in result.output and h.ipv4 in result.output
    assert "running" in result.output
    assert f"Debian repository: {settings.MIRROR_URL}debian/" in result.output


def test_cli_reports_user_errors_without_traceback(lab: hklab.Lab) -> None:
    result = CliRunner().invoke(lab_app, ["up", "999"])
    assert result.exit_code == 1
    assert "1 to 60 hosts" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(hklab.LabError, match="no lab host 'h9'"):
        hklab.host_exec("h9", "true")


def test_current_describes_the_running_lab(lab: hklab.Lab) -> None:
    cur = hklab.current()
    assert cur is not None
    assert cur.hosts == lab.hosts
    assert cur.etcd_sha256 == lab.etcd_sha256
    assert cur.key_path == lab.key_path and cur.known_hosts_path == lab.known_hosts_path


# --------------------------------------------------------------------------- power, reuse


def test_up_with_the_same_size_reuses_the_running_hosts(lab: hklab.Lab, lab_config: Path) -> None:
    sh("h1", "echo kept > /root/reuse-marker")
    known = lab.known_hosts_path.read_text()
    t0 = time.monotonic()
    again = hklab.up(3, config_path=lab_config)
    assert time.monotonic() - t0 < 10
    assert again.hosts == lab.hosts
    assert lab.known_hosts_path.read_text() == known
    assert sh("h1", "cat /root/reuse-marker && rm /root/reuse-marker").strip() == "kept"


def test_stop_and_start_a_host_keeps_its_disk(lab: hklab.Lab) -> None:
    sh("h3", "echo disk > /root/persist && echo ram > /run/volatile")
    hklab.stop_host("h3")
    try:
        assert {h.name: h.state for h in hklab.status().hosts}["h3"] == "stopped"
        assert hklab.host_exec("h3", "true", timeout=30).returncode == 255
        cp = hklab.host_exec("h1", f"ping -c1 -W1 {lab.host('h3').ipv4}")
        assert cp.returncode != 0
        sh("h2", "true")  # the others keep running
    finally:
        hklab.start_host("h3")
    assert {h.name: h.state for h in hklab.status().hosts}["h3"] == "running"
    assert sh("h3", "systemctl is-system-running --wait").strip() == "running"
    assert sh("h3", "cat /root/persist; test ! -e /run/volatile && echo rebooted").split() == [
        "disk",
        "rebooted",
    ]
    sh("h3", "rm /root/persist")


def test_reboot_inside_a_host_brings_it_back(lab: hklab.Lab) -> None:
    sh("h2", "echo before > /run/before-reboot")
    hklab.host_exec("h2", "systemctl reboot", timeout=30)  # ssh may lose the connection
    deadline = time.monotonic() + 60
    while True:
        cp = hklab.host_exec(
            "h2", "test ! -e /run/before-reboot && systemctl is-system-running --wait", timeout=60
        )
        if cp.returncode == 0 and cp.stdout.strip() == "running":
            break
        assert time.monotonic() < deadline, f"h2 did not come back: {cp.stdout}{cp.stderr}"
        time.sleep(0.2)
    assert {h.name: h.state for h in hklab.status().hosts}["h2"] == "running"


def _lab_processes(lab_dir: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(f"{lab_dir}/".encode() in a or a == str(lab_dir).encode() for a in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def _assert_nothing_left(lab_dir: Path) -> None:
    assert machine("ip", "link", "show", "dev", settings.BRIDGE).returncode != 0
    # this slot's names only: other slots' labs may be up beside this one
    assert not [ns for ns in machine("ip", "netns", "list").stdout.split() if settings.NETNS_RE.match(ns)]
    veths = machine("ip", "-o", "link", "show", "type", "veth").stdout
    assert not [v for v in veths.split() if settings.VETH_RE.match(v.split("@")[0])]
    assert machine("nft", "list", "table", "inet", settings.NFT_TABLE).returncode != 0
    assert f"{lab_dir}/" not in Path("/proc/self/mountinfo").read_text()  # (other slots: lab7/...)
    assert _lab_processes(lab_dir) == []
    assert hklab.current() is None


def test_resize_then_clean_up_after_a_crash(lab: hklab.Lab, lab_config: Path) -> None:
    small = hklab.up(2, config_path=lab_config)
    try:
        assert [h.name for h in small.hosts] == ["h1", "h2"]
        assert [h.name for h in hklab.status().hosts] == ["h1", "h2"]
        assert settings.netns_name(3) not in machine("ip", "netns", "list").stdout
        assert "h3" not in lab_config.read_text()
        sh("h2", "true")
        # a crash loses the records: no lab.json, no PID files; everything still runs
        (lab.dir / "lab.json").unlink()
        for pid_file in [*lab.dir.glob("run/*.pid"), *lab.dir.glob("hosts/*/*.pid")]:
            pid_file.unlink()
        assert hklab.current() is None
        assert _lab_processes(lab.dir)  # nspawn, supervisors, mirror
        hklab.down()
        _assert_nothing_left(lab.dir)
        hklab.down()  # nothing up: still fine
        result = CliRunner().invoke(lab_app, ["down"])
        assert result.exit_code == 0, result.output
    finally:
        # give later test modules the session's lab back
        restored = hklab.up(3, config_path=lab_config)
    assert restored.hosts == lab.hosts
    sh("h3", "true")


def test_a_flat_repository_written_by_aptrepo_is_accepted_by_apt(lab: hklab.Lab) -> None:
    """The layout pkgs.k8s.io uses (`deb [signed-by=K] URL /`), from aptrepo, on a real host."""
    from homekube.lab import aptrepo, debrepo
    from homekube.lab.settings import LabPaths

    paths = LabPaths.from_env()
    pool = paths.mirror / "debian" / "pool" / "main"
    debs = sorted(pool.glob("socat_*.deb"))
    assert debs, f"no socat in {pool}"
    key = aptrepo.SigningKey.ensure(debrepo.cache_dir(paths) / "gnupg")
    dest = paths.mirror / "test-flat"
    aptrepo.write_flat_repo(debs, dest, key)
    try:
        assert sorted(p.name for p in dest.iterdir()) == sorted(
            ["InRelease", "Packages", "Packages.gz", "Release", "Release.gpg", "Release.key",
             debs[0].name]
        )
        url = f"{settings.MIRROR_URL}test-flat/"
        # the host takes the key the way pkgs.k8s.io's instructions say: Release.key, dearmored
        out = sh(
            "h2",
            f"set -e; d=$(mktemp -d); chmod 755 $d; mkdir -p $d/lists/partial $d/archives/partial;"
            f" curl -fsS {url}Release.key | gpg --dearmor -o $d/k.gpg;"
            f" echo 'deb [signed-by='$d'/k.gpg] {url} /' > $d/src.list;"
            " o=\"-o Dir::Etc::SourceList=$d/src.list -o Dir::Etc::SourceParts=/nonexistent"
            " -o Dir::State::Lists=$d/lists -o Dir::Cache::Archives=$d/archives\";"
            " apt-get $o update 2>&1; apt-cache $o policy socat;"
            " apt-get $o install -y -q --download-only --reinstall socat >/dev/null 2>&1;"
            " ls $d/archives; rm -rf $d",
        )
        # apt names a flat source "URL-without-slash" + two spaces + the file
        assert f"{url[:-1]}  InRelease" in out and "Fetched" in out, out
        assert "W:" not in out and "E:" not in out, out
        assert f"500 {url[:-1]}  Packages" in out, out
        assert debs[0].name in out  # fetched by its Filename and verified against its hashes
    finally:
        shutil.rmtree(dest, ignore_errors=True)
