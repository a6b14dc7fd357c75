"""Shared test helpers."""

from __future__ import annotations

import textwrap

import pytest

GOOD = textwrap.dedent("""\
    name: krusty
    kubernetes: {version: "1.36", controlPlaneEndpoint: "k8s.home.arpa:6443"}
    network:
      pods: [10.42.0.0/16, fd42:42::/56]
      services: [10.96.0.0/16, fd42:96::/112]
    etcd: {snapshotCount: 5000, heartbeatMs: 100, electionMs: 1000}
    ui: {kind: headlamp, access: read-only}
    ssh: {user: root, key: ~/.ssh/id_ed25519, knownHosts: ~/.ssh/known_hosts}
    artifacts: {mirror: null}
    hosts:
      - {name: krusty, address: 192.0.2.54, address6: "2001:db8::54", roles: [control-plane, etcd, worker]}
      - {name: bart, address: 192.0.2.55, address6: "2001:db8::55", roles: [worker]}
""")

#: a self-signed CA made once for tests (ECDSA P-256, CN "homekube test registry CA"); only its
#: being a parseable certificate matters, and golden files need the same bytes every run
TEST_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBozCCAUqgAwIBAgIIduRAP0RMXcgwCgYIKoZIzj0EAwIwJDEiMCAGA1UEAwwZ
aG9tZWt1YmUgdGVzdCByZWdpc3RyeSBDQTAeFw0yNTEyMzEyMzU1MDBaFw0zNTEy
MzAwMDAwMDBaMCQxIjAgBgNVBAMMGWhvbWVrdWJlIHRlc3QgcmVnaXN0cnkgQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASdraBNe6yZ2lXZPskkvq/gpLjlmJlF
/EuFgfROrBeU5AZHxaSn0R2J3swFy2Sx9Ycdj2+XqjE4BmqI9CV9TLuuo2YwZDAS
BgNVHRMBAf8ECDAGAQH/AgEAMA4GA1UdDwEB/wQEAwIBhjAdBgNVHQ4EFgQU+S+D
KR8tI8mtCZqQ9J349+WHO2wwHwYDVR0jBBgwFoAU+S+DKR8tI8mtCZqQ9J349+WH
O2wwCgYIKoZIzj0EAwIDRwAwRAIgMroHyQmRUZYeWZEmpY/3qtWdwV3liS/Jwm6/
W1ZiYOACIAbTixR7TNAuGi1lk7w2o8mzKVFURUZ6xUeicHd+914D
-----END CERTIFICATE-----
"""


#: Modules run last, after the unit tests too: the minor-upgrade test needs the previous
#: minor's artifacts, which CI builds in the background while everything else runs.
RUN_LAST = ("tests/rig/test_k8s_upgrade.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def last(item: pytest.Item) -> bool:
        return any(item.nodeid.startswith(m) for m in RUN_LAST)

    items.sort(key=last)  # stable: the order inside each group stays
