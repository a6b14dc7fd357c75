"""Node removal via cluster.yaml and `reset`, on real hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from homekube import lab as hklab
from tests.rig.helpers import plan_json, run_cli, sh, write_config

pytestmark = pytest.mark.rig

INVENTORY = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp "
    "-o -path /var/log -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg "
    "-o -path /var/lib/systemd -o -path /var/tmp -o -path /var/lib/containers -o -path /root \\) "
    "-prune -o -print | sort; echo ---units; systemctl list-unit-files --no-legend | awk '{print $1, $2}' | sort; "
    "echo ---ports; ss -ltnH | awk '{print $4}' | sort -u"
)


def inventory(name: str) -> list[str]:
    return sh(name, INVENTORY).splitlines()


def test_reset_returns_hosts_to_fresh(fresh_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    lab, base = fresh_lab
    before = {h.name: inventory(h.name) for h in lab.hosts}
    cfg = write_config(base, tmp_path / "c.yaml", etcd_hosts=("h1", "h2", "h3"))
    assert run_cli("apply", "--config", str(cfg)).returncode == 0
    assert inventory("h2") != before["h2"]
    # a single member of a running cluster is not reset alone
    one = run_cli("reset", "--config", str(cfg), "--host", "h2", "--yes")
    assert one.returncode == 1 and "etcd member of a running cluster" in one.stderr, one.stderr
    dry = run_cli("reset", "--config", str(cfg))
    assert dry.returncode == 0 and "nothing was changed" in dry.stdout
    assert sh("h1", "systemctl is-active etcd").strip() == "active"
    res = run_cli("reset", "--config", str(cfg), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    for h in lab.hosts:
        after = inventory(h.name)
        extra = sorted(set(after) - set(before[h.name]))
        missing = sorted(set(before[h.name]) - set(after))
        assert not extra and not missing, (h.name, extra[:20], missing[:20])
    chk = run_cli("check", "--config", str(cfg))
    assert chk.returncode == 0, chk.stdout + chk.stderr
    again = run_cli("reset", "--config", str(cfg), "--yes")
    assert again.returncode == 0 and "nothing of homekube's is on this host" not in again.stderr


def test_removing_a_member_via_cluster_yaml(fresh_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    _lab, base = fresh_lab
    cfg3 = write_config(base, tmp_path / "three.yaml", etcd_hosts=("h1", "h2", "h3"))
    assert run_cli("apply", "--config", str(cfg3)).returncode == 0
    sh("h1", "for i in $(seq 50); do echo put /keep/$i v$i; done | "
             "env $(grep -v '^#' /etc/etcd/etcdctl.env | xargs) etcdctl txn >/dev/null || "
             "for i in $(seq 50); do env $(grep -v '^#' /etc/etcd/etcdctl.env | xargs) etcdctl put /keep/$i v$i >/dev/null; done")
    # h3 leaves the cluster entirely
    cfg2 = write_config(base, tmp_path / "two.yaml", etcd_hosts=("h1", "h2"), hosts=2)
    plan = run_cli("plan", "--config", str(cfg2))
    assert plan.returncode == 0, plan.stderr
    assert "remove etcd member h3" in plan.stdout
    assert "remove homekube from h3" in plan.stdout
    res = run_cli("apply", "--config", str(cfg2))
    assert res.returncode == 0, res.stdout + res.stderr
    members = sh("h1", "env $(grep -v '^#' /etc/etcd/etcdctl.env | xargs) etcdctl member list")
    assert sorted(line.split(", ")[2] for line in members.splitlines()) == ["h1", "h2"]
    health = sh("h1", "env $(grep -v '^#' /etc/etcd/etcdctl.env | xargs) etcdctl endpoint health --cluster 2>&1")
    # each member advertises an IPv4 and an IPv6 client URL
    assert health.count("is healthy") == 4 and "unhealthy" not in health, health
    n = sh("h2", "env $(grep -v '^#' /etc/etcd/etcdctl.env | xargs) etcdctl get --prefix --keys-only /keep/ | grep -c /keep/")
    assert n.strip() == "50"
    assert hklab.host_exec("h3", "systemctl is-active etcd").stdout.strip() != "active"
    assert hklab.host_exec("h3", "ls /etc/etcd /usr/local/bin/etcd").returncode != 0
    assert plan_json(cfg2)["changes"] == 0
