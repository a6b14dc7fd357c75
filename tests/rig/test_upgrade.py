"""etcd upgrade on a 3-member lab cluster with a writer running: Debian's 3.4 package →
the 3.5 release tarball from the lab mirror, one member at a time, no failed write."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from homekube import lab as hklab
from tests.rig.helpers import plan_json, run_cli, sh, write_config

pytestmark = pytest.mark.rig

CTL = "env $(grep -v '^#' /etc/etcd/etcdctl.env | xargs) etcdctl"


def versions() -> dict[str, str]:
    out = json.loads(sh("h1", f"{CTL} endpoint status --cluster -w json"))
    return {e["Endpoint"]: e["Status"]["version"] for e in out}


def test_package_to_tarball_upgrade_with_writer(fresh_lab: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    lab, base = fresh_lab
    pkg = write_config(base, tmp_path / "pkg.yaml", etcd_hosts=("h1", "h2", "h3"), replace={
        "  install: tarball\n": "  install: package\n",
    })
    res = run_cli("apply", "--config", str(pkg))
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(versions().values()) == {"3.4.23"}, versions()
    assert plan_json(pkg)["changes"] == 0

    # skipping a minor is refused before anything is touched
    skip = write_config(base, tmp_path / "skip.yaml", etcd_hosts=("h1", "h2", "h3"), replace={
        "version: 3.5.1": "version: 3.6.14",
    })
    refused = run_cli("apply", "--config", str(skip))
    assert refused.returncode == 1 and "skips a minor" in refused.stderr, refused.stderr
    assert set(versions().values()) == {"3.4.23"}

    endpoints = ",".join(f"https://{h.ipv4}:2379" for h in lab.hosts)
    # Like every etcd client (kube-apiserver included), the writer retries a write once after
    # a transport error; a failed write is one that did not land after that retry. First-try
    # errors are counted separately and reported.
    put = (f"env $(grep -v -e '^#' -e ENDPOINTS /etc/etcd/etcdctl.env | xargs) etcdctl "
           f"--endpoints={endpoints} put /upgrade/$n $n >/dev/null 2>>/tmp/writer.err")
    writer = (
        "rm -f /tmp/stop /tmp/writer.err; n=0; fail=0; retried=0; end=$((SECONDS + 240)); "
        "while [ ! -e /tmp/stop ] && [ $SECONDS -lt $end ]; do n=$((n + 1)); "
        f"if ! {put}; then retried=$((retried + 1)); {put} || fail=$((fail + 1)); fi; done; "
        "echo $n $fail $retried"
    )
    result: dict[str, str] = {}
    t = threading.Thread(target=lambda: result.update(out=sh("h2", writer, timeout=300)))
    t.start()
    try:
        sh("h2", f"for _ in $(seq 100); do {CTL} get /upgrade/3 | grep -q 3 && exit 0; sleep 0.1; done; exit 1")
        up = write_config(base, tmp_path / "tarball.yaml", etcd_hosts=("h1", "h2", "h3"))
        plan = run_cli("plan", "--config", str(up))
        assert "install etcd 3.5.1" in plan.stdout and plan.stdout.count("~ restart etcd") == 3, plan.stdout
        res = run_cli("apply", "--config", str(up))
        assert res.returncode == 0, res.stdout + res.stderr
        sh("h2", "sleep 1; touch /tmp/stop")
    finally:
        sh("h2", "touch /tmp/stop")
        t.join(timeout=320)
    n, fail, retried = map(int, result["out"].split())
    errors = hklab.host_exec("h2", "cat /tmp/writer.err").stdout
    print(f"writes during upgrade: {n}, failed: {fail}, first attempts retried: {retried}")
    assert n > 50, n
    assert fail == 0, errors[-2000:]
    assert set(versions().values()) == {"3.5.1"}, versions()
    count = sh("h1", f"{CTL} get --prefix --keys-only /upgrade/ | grep -c /upgrade/").strip()
    assert int(count) == n
    assert plan_json(up)["changes"] == 0
