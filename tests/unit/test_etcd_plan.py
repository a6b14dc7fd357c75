"""etcd planning rules that need no host: version gates, bootstrap-key keeping."""

from __future__ import annotations

import pytest

from homekube.etcd.membership import version_gate
from homekube.render.etcd import parse_bootstrap


@pytest.mark.parametrize(("cur", "target", "ok"), [
    ("3.5.1", "3.5.33", True),
    ("3.4.23", "3.5.1", True),
    ("3.5.1", "3.6.14", False),   # below the 3.5.24 floor
    ("3.5.24", "3.6.14", True),
    ("3.6.10", "3.7.1", False),   # below 3.6.11
    ("3.6.11", "3.7.1", True),
    ("3.4.23", "3.6.14", False),  # skips a minor
    ("3.6.14", "3.5.33", False),  # downgrade
    ("3.6.14", "3.6.14", True),
])
def test_version_gate(cur: str, target: str, ok: bool) -> None:
    why = version_gate(cur, target)
    assert (why is None) == ok, why
    if not ok:
        assert cur in why and target in why  # type: ignore[operator]


def test_bootstrap_keys_are_read_back() -> None:
    text = b"""name: h1
initial-cluster: h1=https://10.0.0.1:2380
initial-cluster-state: new
initial-cluster-token: homekube-lab
client-transport-security:
  cert-file: x
"""
    assert parse_bootstrap(text) == {
        "initial-cluster": "h1=https://10.0.0.1:2380",
        "initial-cluster-state": "new",
        "initial-cluster-token": "homekube-lab",
    }


GATEWAY_MEMBERS = (
    '{"header":{"cluster_id":"1669094352546395778","member_id":"9163545778176158982"},'
    '"members":[{"ID":"9163545778176158982","name":"h1","peerURLs":["https://192.0.2.11:2380"],'
    '"clientURLs":["https://192.0.2.11:2379"]},'
    '{"ID":"12","peerURLs":["https://192.0.2.12:2380"],"isLearner":true}]}'
)
ETCDCTL_MEMBERS = (
    '{"header":{"cluster_id":1669094352546395778},"members":[{"ID":9163545778176158982,"name":"h1",'
    '"peerURLs":["https://192.0.2.11:2380"],"clientURLs":["https://192.0.2.11:2379"]}]}'
)


@pytest.mark.parametrize(("members", "status"), [
    # etcd's JSON gateway (what the fact asks when curl is there): 64-bit IDs as strings,
    # empty fields left out (a member added but not started has no name)
    (GATEWAY_MEMBERS, '{"header":{},"version":"3.5.1","leader":"9163545778176158982"}'),
    # etcdctl -w json (the fallback): numbers, and status wrapped per endpoint
    (ETCDCTL_MEMBERS, '[{"Endpoint":"https://127.0.0.1:2379","Status":{"version":"3.5.1"}}]'),
])
def test_etcd_fact_reads_gateway_and_etcdctl_json(members: str, status: str) -> None:
    from homekube.etcd.layout import TARBALL_BIN
    from homekube.etcd.shell import parse_etcd_fact

    f = parse_etcd_fact(f"user=etcd\nversion{TARBALL_BIN}=etcd Version: 3.5.0\\nGit SHA: x\n"
                        f"initialized=yes\nmembers={members}\nstatus={status}\n")
    assert f.user and f.initialized and f.versions == {TARBALL_BIN: "3.5.0"}
    assert f.members is not None and f.members[0].id == 9163545778176158982
    assert f.members[0].name == "h1" and f.members[0].client_urls == ("https://192.0.2.11:2379",)
    assert [m.learner for m in f.members] == [False, True][: len(f.members)]
    assert f.status is not None and f.status.version == "3.5.1"


def test_etcd_fact_without_an_answer_has_no_members() -> None:
    """A stopped member refuses the connection: empty answers, not an empty member list."""
    from homekube.etcd.shell import parse_etcd_fact

    f = parse_etcd_fact("members=\nstatus=\n")
    assert f.members is None and f.status is None and not f.user and f.versions == {}
    bad = parse_etcd_fact('members={"error":"etcdserver: request timed out"}\nstatus=<html>\n')
    assert bad.members is None and bad.status is None
