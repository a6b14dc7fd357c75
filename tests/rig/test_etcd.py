"""etcd on real hosts: TLS from the first start, growth 1 → 3 without downtime, quorum kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homekube import lab as hklab
from tests.rig.helpers import plan_json, run_cli, run_on, write_config

pytestmark = pytest.mark.rig

PKI = "/etc/kubernetes/pki"
APICLIENT = f"--cacert {PKI}/etcd/ca.crt --cert {PKI}/apiserver-etcd-client.crt --key {PKI}/apiserver-etcd-client.key"


@pytest.fixture(scope="module")
def one_member(tmp_path_factory: pytest.TempPathFactory) -> tuple[hklab.Lab, Path]:
    hklab.down()
    d = tmp_path_factory.mktemp("etcd")
    cfg = d / "homekube-lab.yaml"
    lab = hklab.up(3, config_path=cfg)
    res = run_cli("apply", "--config", str(cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    return lab, cfg


def test_plaintext_http_is_refused(one_member: tuple[hklab.Lab, Path]) -> None:
    lab, _ = one_member
    h1 = lab.host("h1")
    res = run_on("h2", f"curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://{h1.ipv4}:2379/health", ok=False)
    assert res.returncode != 0 or res.stdout.strip() in ("000", "400"), res.stdout
    # TLS without a client certificate is refused too
    res = run_on("h2", f"curl -s -m 3 --cacert /dev/null -k https://{h1.ipv4}:2379/v3/kv/range -d '{{}}'", ok=False)
    assert res.returncode != 0


def test_foreign_ca_client_is_refused(one_member: tuple[hklab.Lab, Path]) -> None:
    lab, _ = one_member
    h1 = lab.host("h1")
    run_on("h2", "cd /root && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout evil-ca.key -out evil-ca.crt -subj /CN=etcd-ca -days 2 2>/dev/null && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout evil.key "
             "-out evil.csr -subj /CN=kube-apiserver-etcd-client 2>/dev/null && "
             "printf 'extendedKeyUsage=clientAuth\\n' > ext && openssl x509 -req -in evil.csr "
             "-CA evil-ca.crt -CAkey evil-ca.key -CAcreateserial -out evil.crt -days 2 -extfile ext 2>/dev/null")
    res = run_on("h2", f"curl -s -m 5 --cacert {PKI}/etcd/ca.crt --cert /root/evil.crt --key /root/evil.key "
                   f"https://{h1.ipv4}:2379/v3/kv/range -d '{{}}'", ok=False)
    assert res.returncode != 0, res.stdout
    # the same kind of request with a client cert from the real CA is accepted
    ok = run_on("h1", f"ETCDCTL_API=3 etcdctl --endpoints https://{h1.ipv4}:2379 {APICLIENT} endpoint health")
    assert "is healthy" in ok.stdout + ok.stderr


def test_apiserver_client_reads_and_writes_over_ipv4_and_ipv6(one_member: tuple[hklab.Lab, Path]) -> None:
    lab, _ = one_member
    h1 = lab.host("h1")
    for ep, val in ((f"https://{h1.ipv4}:2379", "v4"), (f"https://[{h1.ipv6}]:2379", "v6")):
        run_on("h1", f"etcdctl --endpoints {ep} {APICLIENT} put /homekube/test/{val} {val}")
        got = run_on("h1", f"etcdctl --endpoints {ep} {APICLIENT} get --print-value-only /homekube/test/{val}")
        assert got.stdout.strip() == val


def test_every_chain_verifies_and_sans_cover_every_dialled_address(one_member: tuple[hklab.Lab, Path]) -> None:
    lab, _ = one_member
    h1 = lab.host("h1")
    for cert in ("etcd/server", "etcd/peer", "etcd/healthcheck-client", "apiserver-etcd-client"):
        out = run_on("h1", f"openssl verify -CAfile {PKI}/etcd/ca.crt {PKI}/{cert}.crt").stdout
        assert out.strip().endswith(": OK"), out
    for copy in ("server", "peer"):
        run_on("h1", f"cmp /etc/etcd/pki/{copy}.crt {PKI}/etcd/{copy}.crt && cmp /etc/etcd/pki/{copy}.key {PKI}/etcd/{copy}.key")
    text = run_on("h1", f"openssl x509 -in {PKI}/etcd/server.crt -noout -ext subjectAltName").stdout
    conf = run_on("h1", "cat /etc/etcd/etcd.conf.yml").stdout
    dialled = [u.split("//")[1].rsplit(":", 1)[0].strip("[]") for u in
               next(line for line in conf.splitlines() if line.startswith("listen-client-urls:")).split(": ", 1)[1].split(",")]
    assert set(dialled) == {"127.0.0.1", h1.ipv4, h1.ipv6}
    import ipaddress

    sans = {str(ipaddress.ip_address(x.strip().removeprefix("IP Address:")))
            for x in text.split("\n", 1)[1].split(",") if "IP Address:" in x}
    for addr in dialled:
        assert str(ipaddress.ip_address(addr)) in sans, (addr, text)
    assert "DNS:h1" in text and "DNS:localhost" in text
    # the CA key never reaches a host
    assert run_on("h1", f"ls {PKI}/etcd/ca.key /etc/etcd/pki/ca.key", ok=False).returncode != 0
    modes = run_on("h1", f"stat -c '%a %U %n' {PKI}/etcd/*.key {PKI}/*.key /etc/etcd/pki/*.key").stdout
    for line in modes.splitlines():
        assert line.startswith("600 "), line


def test_etcd_runs_as_its_own_user_with_tls_from_the_start(one_member: tuple[hklab.Lab, Path]) -> None:
    conf = run_on("h1", "cat /etc/etcd/etcd.conf.yml").stdout
    assert "http://" not in conf.replace("listen-metrics-urls: http://127.0.0.1:2381", "")
    assert conf.count("client-cert-auth: true") == 2
    assert run_on("h1", "ps -o user= -C etcd").stdout.split() == ["etcd"]
    assert run_on("h1", "stat -c '%a %U' /var/lib/etcd").stdout.strip() == "700 etcd"
    assert run_on("h1", "systemctl show -p Type --value etcd").stdout.strip() == "notify"
    assert "etcdutl" in run_on("h1", "command -v etcdctl etcdutl").stdout


def test_grow_from_one_to_three_members(one_member: tuple[hklab.Lab, Path], tmp_path: Path) -> None:
    lab, cfg1 = one_member
    h1 = lab.host("h1")
    for i in range(20):
        run_on("h1", f"set -a; . /etc/etcd/etcdctl.env; etcdctl put /before/{i} value-{i} >/dev/null")
    cfg3 = write_config(cfg1, tmp_path / "three.yaml", etcd_hosts=("h1", "h2", "h3"))
    plan = run_cli("plan", "--config", str(cfg3))
    assert plan.returncode == 0, plan.stderr
    assert "add h2 as a learner" in plan.stdout and "promote h3" in plan.stdout
    res = run_cli("apply", "--config", str(cfg3))
    assert res.returncode == 0, res.stdout + res.stderr
    members = json.loads(run_on("h1", "set -a; . /etc/etcd/etcdctl.env; etcdctl member list -w json").stdout)
    names = sorted(m["name"] for m in members["members"])
    assert names == ["h1", "h2", "h3"]
    assert not any(m.get("isLearner") for m in members["members"])
    for h in ("h1", "h2", "h3"):
        got = run_on(h, "set -a; . /etc/etcd/etcdctl.env; etcdctl get --prefix --keys-only /before/ | grep -c /before/").stdout
        assert got.strip() == "20", (h, got)
    assert plan_json(cfg3)["changes"] == 0
    # status over mTLS from this machine sees three healthy endpoints
    st = run_cli("status", "--config", str(cfg3), "--output", "json")
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert data["etcd"]["healthy"] == 3 and data["etcd"]["total"] == 3
    assert sorted(m["name"] for m in data["etcd"]["members"]) == ["h1", "h2", "h3"]
    del h1


def test_one_host_down_keeps_quorum_and_unsafe_removal_is_refused(
    one_member: tuple[hklab.Lab, Path], tmp_path: Path
) -> None:
    _lab, cfg1 = one_member
    cfg3 = write_config(cfg1, tmp_path / "three.yaml", etcd_hosts=("h1", "h2", "h3"))
    assert run_cli("apply", "--config", str(cfg3)).returncode == 0  # three members (idempotent)
    hklab.stop_host("h3")
    try:
        st = run_cli("status", "--config", str(cfg3), "--output", "json")
        assert st.returncode == 3, st.stderr  # a host is unreachable (documented exit code)
        data = json.loads(st.stdout)
        assert data["exitCode"] == 3
        assert data["etcd"]["healthy"] == 2 and data["etcd"]["total"] == 3, data["etcd"]
        text = run_cli("status", "--config", str(cfg3))
        assert text.returncode == 3
        assert "2 of 3 endpoints healthy" in text.stdout
        assert "h3: UNREACHABLE: " in text.stdout
        run_on("h1", "set -a; . /etc/etcd/etcdctl.env; etcdctl put /during/outage yes")
        assert run_on("h2", "set -a; . /etc/etcd/etcdctl.env; etcdctl get --print-value-only /during/outage").stdout.strip() == "yes"
        # removing h2 while h3 is down would leave one healthy voter of two
        cfg_rm = write_config(cfg1, tmp_path / "rm.yaml", etcd_hosts=("h1", "h3"))
        before = run_on("h1", "set -a; . /etc/etcd/etcdctl.env; etcdctl member list").stdout
        res = run_cli("apply", "--config", str(cfg_rm))
        assert res.returncode != 0
        assert "would leave 1 healthy of 2 members" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        assert run_on("h1", "set -a; . /etc/etcd/etcdctl.env; etcdctl member list").stdout == before
    finally:
        hklab.start_host("h3")
    # h3 comes back and catches up
    wait = ("for _ in $(seq 150); do set -a; . /etc/etcd/etcdctl.env; "
            "etcdctl get --print-value-only /during/outage 2>/dev/null | grep -q yes && exit 0; sleep 0.2; done; exit 1")
    run_on("h3", wait)
    assert plan_json(cfg3)["changes"] == 0
