"""Shared test helpers."""

from __future__ import annotations

import textwrap

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
