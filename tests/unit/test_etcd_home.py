"""The etcd home's pure parts: parsers of each answer, membership rules, the snapshot script's
one-off mode (run against fake etcdctl/etcdutl), topology."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from homekube.config.loader import load_text
from homekube.etcd import api, layout, membership, shell, snapshot
from homekube.topology import Topology

STATUS_ETCDCTL = (
    '[{"Endpoint":"https://127.0.0.1:2379","Status":{"header":{"cluster_id":1,"member_id":255,'
    '"revision":9,"raft_term":2},"version":"3.6.14","dbSize":20480,"leader":255,"raftIndex":42,'
    '"raftTerm":2,"isLearner":false}}]'
)
STATUS_GATEWAY = (
    '{"header":{"cluster_id":"1","member_id":"255","revision":"9","raft_term":"2"},'
    '"version":"3.6.14","dbSize":"20480","leader":"255","raftIndex":"42","raftTerm":"2"}'
)


@pytest.mark.parametrize("text", [STATUS_ETCDCTL, STATUS_GATEWAY])
def test_status_reads_both_spellings(text: str) -> None:
    st = api.STATUS.parse(api.parse_json(text))
    assert st == api.EtcdStatus("3.6.14", 20480, 42, 255, 255, False)


@pytest.mark.parametrize("text", ["", "<html>", '{"error":"etcdserver: request timed out"}', "[]"])
def test_non_answers_parse_to_none(text: str) -> None:
    data = api.parse_json(text)
    assert api.STATUS.parse(data) is None and api.MEMBER_LIST.parse(data) is None


def test_fields_and_live_counts() -> None:
    out = ('"ClusterID" : 1\n"MemberID" : 2\n"Revision" : 7\n"Count" : 12\n'
           '"ClusterID" : 1\n"Version" : "3.6.14"\n"Revision" : 9\n')
    assert api.parse_fields(out)["Version"] == "3.6.14"
    assert shell.parse_live_counts(out) == {"count": 12, "revision": 9}


def _m(name: str, *, learner: bool = False, peer: str | None = None) -> api.EtcdMember:
    return api.EtcdMember(len(name) + ord(name[0]) if name else 1, name,
                          (peer or f"https://{name}:2380",), (), learner)


def test_removals_count_healthy_voters_one_removal_at_a_time() -> None:
    live = [_m("a"), _m("b"), _m("c"), _m("d", learner=True)]
    leaving = membership.leaving(live, {"a"}, ())
    rs = membership.removals(live, leaving, healthy={"a", "c"})
    assert [(r.member.name, r.healthy, r.remaining, r.keeps_quorum) for r in rs] == [
        ("b", 2, 2, True), ("c", 1, 1, True), ("d", 1, 1, True)]
    rs = membership.removals(live, membership.leaving(live, {"a", "c"}, ()), healthy={"a"})
    assert not rs[0].keeps_quorum and rs[0].down == ("c",)
    assert "would leave 1 healthy of 2" in membership.removal_refusal(rs[0])


def test_pending_join_is_neither_leaving_nor_current() -> None:
    pending = api.EtcdMember(9, "", ("https://b:2380",), (), True)
    live = [_m("a"), pending]
    assert membership.leaving(live, {"a", "b"}, {"https://a:2380", "https://b:2380"}) == []
    assert membership.current_peers(live, {"https://b:2380"}) == [("a", "https://a:2380")]
    assert membership.joining(["a", "b"], live) == ["b"]


def test_read_membership_prefers_a_wanted_host() -> None:
    m = membership.read_membership([("old", [_m("a")]), ("a", [_m("a")])], {"a"}, True)
    assert m.source == "a" and not m.fresh
    assert membership.read_membership([("a", None)], {"a"}, False) == membership.Membership(None, None, True)


FAKE_ETCDCTL = """#!/bin/bash
case "$1 $2" in
  "snapshot save") printf 'snapshot-bytes' > "$3" ;;
  "get ") echo '"Revision" : 7'; echo '"Count" : 5' ;;
  "endpoint status") echo '"Version" : "3.6.14"'; echo '"DBSize" : 100' ;;
  *) echo "fake etcdctl: $*" >&2; exit 1 ;;
esac
"""
FAKE_ETCDUTL = """#!/bin/bash
echo '{"hash":11,"revision":7,"totalKey":6,"totalSize":100}'
"""
FAKE_MKTEMP = """#!/bin/bash
d="$FAKE_TMP/homekube-backup.test"; mkdir -p "$d"; echo "$d"
"""


def test_once_mode_reports_what_backup_reads(tmp_path: Path) -> None:
    """`homekube backup` runs the timer's script with HOMEKUBE_BACKUP_ONCE=1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"etcdctl": FAKE_ETCDCTL, "etcdutl": FAKE_ETCDUTL, "mktemp": FAKE_MKTEMP}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "etcdctl.env").write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOMEKUBE_ETCDCTL_ENV": str(tmp_path / "etcdctl.env"),
           "FAKE_TMP": str(tmp_path)}
    # the first arg of `get` is the empty key: "$1 $2" is "get "
    cp = subprocess.run(["bash", "-s"], input=snapshot.once_script(), env=env, capture_output=True,
                        text=True, timeout=60, check=False)
    assert cp.returncode == 0, cp.stderr
    rep = snapshot.parse_report(cp.stdout)
    assert rep.status == api.SnapshotStatus(hash=11, revision=7, total_keys=6)
    assert rep.keys == 5 and rep.version == "3.6.14" and rep.size == len("snapshot-bytes")
    assert Path(rep.file).read_bytes() == b"snapshot-bytes" and rep.dir == str(Path(rep.file).parent)
    assert os.path.basename(rep.dir).startswith("homekube-backup.")


def test_report_without_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="no snapshot status"):
        snapshot.parse_report("dir=/var/tmp/x\nstatus=\nsize=1\nsha256=ab\n")


def test_topology_answers_once() -> None:
    cfg = load_text(textwrap.dedent("""\
        name: home
        kubernetes: {enabled: true, version: "1.36"}
        ssh: {key: null, knownHosts: null, config: null}
        hosts:
          - {name: w, address: 192.0.2.14, roles: [worker]}
          - {name: a, address: 192.0.2.11, roles: [control-plane, etcd]}
          - {name: b, address: 192.0.2.12, roles: [etcd]}
        """))
    t = Topology(cfg)
    assert t.etcd_names == ["a", "b"]
    assert t.etcd_peers == [("a", "https://192.0.2.11:2380"), ("b", "https://192.0.2.12:2380")]
    assert t.etcd_client_urls == ["https://192.0.2.11:2379", "https://192.0.2.12:2379"]
    assert t.first_control_plane is not None and t.first_control_plane.name == "a"
    assert t.api_endpoint == "192.0.2.11:6443"
    assert [h.name for h in t.etcd_hosts_among(["b", "w"])] == ["b"]
    assert layout.url("2001:db8::1", layout.PEER_PORT) == "https://[2001:db8::1]:2380"


def test_fact_reports_the_tarball_version_only_when_every_binary_is_there(tmp_path: Path) -> None:
    """A host powered off between two binaries of an install must get the install again."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for b in layout.BINARIES:
        exe = bindir / b
        exe.write_text("#!/bin/sh\necho 'etcd Version: 3.6.14'\necho 'Git SHA: x'\n")
        exe.chmod(0o755)
    cmd = shell.etcd_fact(str(tmp_path / "data"), str(tmp_path / "stamp")).command
    # the snippet with the tarball's directory moved here, and no distro etcd
    cmd = cmd.replace(layout.TARBALL_BIN, str(bindir)).replace(layout.PACKAGE_BIN, str(tmp_path / "none"))

    def versions() -> dict[str, str]:
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30).stdout
        return shell.parse_etcd_fact(out.replace(str(bindir), layout.TARBALL_BIN)).versions

    assert versions() == {layout.TARBALL_BIN: "3.6.14"}
    (bindir / "etcdctl").unlink()
    assert versions() == {}


def test_health_wait_failure_shows_the_checks_own_answer() -> None:
    """A wait that runs out says what the check itself answered, not only the unit's state."""
    check = """sh -c 'echo "dial tcp 127.0.0.1:2379: refused" >&2; exit 1'"""  # one command, as etcdctl
    script = shell.wait_healthy("no-such-unit", check, seconds=1)
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines.index("no-such-unit did not become healthy") < lines.index(
        "dial tcp 127.0.0.1:2379: refused")
    ok = subprocess.run(["bash", "-c", shell.wait_healthy("no-such-unit", "true", seconds=1)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stderr == ""
