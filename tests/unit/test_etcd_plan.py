"""etcd planning rules that need no host: version gates, bootstrap-key keeping."""

from __future__ import annotations

import pytest

from homekube.components.etcd import version_gate
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
