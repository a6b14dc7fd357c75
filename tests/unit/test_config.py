"""cluster.yaml loading: every problem at once, located as file:line:column."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from homekube.config.loader import load, load_text, warnings_for
from homekube.config.model import ClusterConfig
from homekube.errors import ConfigError
from tests.conftest import GOOD

LOC = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<rest>.*)$")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_text(text, "c.yaml")
    return [str(p) for p in e.value.problems]


def test_good_config_loads() -> None:
    cfg = load_text(GOOD)
    assert cfg.name == "krusty"
    assert cfg.network.dual_stack
    assert [h.name for h in cfg.etcd_hosts] == ["krusty"]
    assert cfg.etcd_version == "3.6.14"
    assert cfg.kubernetes.minor == "1.36"
    assert warnings_for(cfg) == []


# (name, yaml, expected line, expected message fragment)
BAD: list[tuple[str, str, int, str]] = [
    ("yaml syntax", "name: a\nhosts: [\n", 3, "YAML syntax"),
    ("tab indentation", "name: a\nhosts:\n\t- x\n", 3, "YAML syntax"),
    ("top level list", "- a\n- b\n", 1, "top level must be a mapping"),
    ("empty", "", 1, "empty"),
    ("unknown top key", GOOD + "colour: blue\n", 13, "unknown key"),
    ("unknown nested key", GOOD.replace("snapshotCount: 5000", "snapshotCnt: 5000"), 6, "unknown key"),
    ("wrong type", GOOD.replace("snapshotCount: 5000", "snapshotCount: many"), 6, "valid integer"),
    ("bad cidr", GOOD.replace("10.42.0.0/16", "10.42.0.0/33"), 4, "not a valid network"),
    ("host bits set", GOOD.replace("10.42.0.0/16", "10.42.0.1/16"), 4, "not a valid network"),
    ("bad address", GOOD.replace("192.0.2.55", "192.0.2.300"), 12, "not a valid IP address"),
    ("two v4 pod nets", GOOD.replace("fd42:42::/56", "10.43.0.0/16"), 3, "one IPv4 and one IPv6"),
    ("family order mismatch", GOOD.replace("[10.96.0.0/16, fd42:96::/112]", "[fd42:96::/112, 10.96.0.0/16]"), 3, "families and order must match"),
    ("overlapping pods/services", GOOD.replace("10.96.0.0/16", "10.42.128.0/17"), 5, "overlaps"),
    ("host inside pod net", GOOD.replace("192.0.2.55", "10.42.0.5"), 12, "lies inside"),
    ("service net too big", GOOD.replace("10.96.0.0/16", "10.0.0.0/8"), 3, "too large"),
    ("duplicate host name", GOOD.replace("name: bart", "name: krusty"), 12, "duplicate host name"),
    ("duplicate address", GOOD.replace("192.0.2.55", "192.0.2.54"), 12, "duplicate address"),
    ("dual stack needs v6", GOOD.replace(', address6: "2001:db8::55"', ""), 12, "needs address6"),
    ("no etcd host", GOOD.replace("[control-plane, etcd, worker]", "[control-plane, worker]"), 10, "etcd role"),
    ("no control plane", GOOD.replace("[control-plane, etcd, worker]", "[etcd, worker]"), 10, "control-plane role"),
    ("bad role", GOOD.replace("roles: [worker]", "roles: [master]"), 12, "Input should be"),
    ("empty roles", GOOD.replace("roles: [worker]", "roles: []"), 12, "must not be empty"),
    ("bad host name", GOOD.replace("name: bart", "name: Bart_1"), 12, "DNS label"),
    ("unsupported k8s", GOOD.replace('version: "1.36"', 'version: "1.20"'), 2, "not supported"),
    ("bad election timing", GOOD.replace("electionMs: 1000", "electionMs: 200"), 6, "5 × heartbeatMs"),
    ("bad endpoint", GOOD.replace('"k8s.home.arpa:6443"', '"k8s.home.arpa"'), 2, "host:port"),
    ("bad mirror url", GOOD.replace("mirror: null", "mirror: ftp//x"), 9, "URL"),
    ("bad ui access", GOOD.replace("access: read-only", "access: everything"), 7, "Input should be"),
    ("bad sysctl key", GOOD + "hostPrep: {sysctls: {'net ipv4': '1'}}\n", 13, "not a sysctl key"),
    ("loopback address", GOOD.replace("192.0.2.55", "127.0.0.1"), 12, "cannot be a node address"),
    # reset removes the etcd data and backup directories whole: never a system directory
    ("data dir is /", GOOD.replace("snapshotCount: 5000", "dataDir: /, snapshotCount: 5000"), 6,
     "/ is a system directory"),
    ("data dir is /var", GOOD.replace("snapshotCount: 5000", "dataDir: /var, snapshotCount: 5000"), 6,
     "/var is a system directory"),
    ("backup dir is /var/lib", GOOD.replace("snapshotCount: 5000", "backup: {dir: /var/lib}, snapshotCount: 5000"),
     6, "/var/lib is a system directory"),
    ("relative data dir", GOOD.replace("snapshotCount: 5000", "dataDir: etcd, snapshotCount: 5000"), 6,
     "not an absolute path"),
    ("data dir with ..", GOOD.replace("snapshotCount: 5000", "dataDir: /var/lib/../etc, snapshotCount: 5000"), 6,
     "not a normalized path"),
    ("control char in ssh user", GOOD.replace("user: root", 'user: "\\x1f"'), 8, "not a login name"),
    ("snapshot count too big", GOOD.replace("snapshotCount: 5000", "snapshotCount: 99999999999999999999"), 6,
     "less than or equal to 1000000"),
]


@pytest.mark.parametrize(("name", "text", "line", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_located(name: str, text: str, line: int, fragment: str) -> None:
    found = problems(text)
    assert found, name
    matching = [p for p in found if fragment in p]
    assert matching, f"{name}: {fragment!r} not in {found}"
    m = LOC.match(matching[0])
    assert m, matching[0]
    assert m["file"] == "c.yaml"
    assert int(m["line"]) == line, f"{name}: {matching[0]}"
    assert int(m["col"]) >= 1


def test_all_problems_reported_at_once() -> None:
    text = (
        GOOD.replace("snapshotCount: 5000", "snapshotCount: x")
        .replace("name: bart", "name: BART")
        .replace("access: read-only", "access: all")
        + "extra: 1\n"
    )
    found = problems(text)
    assert len(found) >= 4, found
    lines = [int(LOC.match(p)["line"]) for p in found]  # type: ignore[index]
    assert lines == sorted(lines)


def test_semantic_problems_reported_together() -> None:
    text = GOOD.replace("name: bart", "name: krusty").replace("10.96.0.0/16", "10.42.0.0/24")
    found = problems(text)
    assert any("duplicate host name" in p for p in found)
    assert any("overlaps" in p for p in found)


def test_even_etcd_count_is_a_warning() -> None:
    text = GOOD.replace("roles: [worker]", "roles: [etcd, worker]")
    cfg = load_text(text)
    ws = warnings_for(cfg)
    assert len(ws) == 1 and ws[0].warning and "odd" in ws[0].message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path / "nope.yaml")
    assert "file not found" in str(e.value)
    assert e.value.exit_code == 2


def test_model_is_frozen_and_strict() -> None:
    cfg = load_text(GOOD)
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen
        cfg.name = "x"  # type: ignore[misc]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "homekube", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_cli_bad_config_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text(GOOD.replace("snapshotCount: 5000", "snapshotCount: x").replace("name: bart", "name: B"))
    for verb in ("plan", "apply", "check", "status"):
        res = run_cli(verb, "--config", str(bad))
        assert res.returncode == 2, (verb, res.stderr)
        assert "Traceback" not in res.stderr + res.stdout
        assert f"{bad}:6:" in res.stderr and f"{bad}:12:" in res.stderr


def test_cli_unknown_phase_is_usage_error(tmp_path: Path) -> None:
    good = tmp_path / "cluster.yaml"
    good.write_text(GOOD)
    res = run_cli("plan", "--config", str(good), "--only", "nonsense")
    assert res.returncode == 2
    assert "unknown phase" in res.stderr


def test_schema_is_json_schema() -> None:
    res = run_cli("schema")
    assert res.returncode == 0
    s = json.loads(res.stdout)
    assert "hosts" in s["properties"] and "controlPlaneEndpoint" in json.dumps(s)
    assert s["additionalProperties"] is False


def test_init_output_loads(tmp_path: Path) -> None:
    res = run_cli("init", "--host", "192.0.2.20", "--host", "192.0.2.21")
    assert res.returncode == 0, res.stderr
    cfg = load_text(res.stdout)
    assert isinstance(cfg, ClusterConfig)
    assert [h.roles for h in cfg.hosts] == [("control-plane", "etcd", "worker"), ("worker",)]


def test_readme_config_reference_is_current() -> None:
    from homekube.config.reference import update

    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text()
    assert update(text) == text, "run `python -m homekube.config.reference` to regenerate"
