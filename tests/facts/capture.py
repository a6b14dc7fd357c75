"""Capture the raw output of homekube's facts script on a host, for parser fixtures.

    python -m tests.facts.capture CONFIG HOST > tests/facts/captured/<os>.txt

The probe set is fixed (PROBES below) so fixtures from different systems are comparable.
"""

from __future__ import annotations

import asyncio
import sys

from homekube.config.loader import load
from homekube.facts.base import compose
from homekube.facts.system import Probes, facts_for
from homekube.ops.session import connect_all

NONCE = "fixture"
PROBES = Probes(
    files={"/etc/sysctl.d/90-homekube.conf": False, "/etc/etcd/etcd.conf.yml": False,
           "/etc/etcd": False, "/etc/kubernetes/pki/etcd/server.key": True, "/nonexistent": False},
    sysctls={"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables",
             "kernel.pid_max", "net.no.such.key"},
    units={"etcd.service", "NetworkManager.service", "firewalld.service", "ssh.service", "sshd.service"},
    packages={"iptables", "iproute2", "iproute", "socat", "conntrack", "conntrack-tools", "curl"},
    modules={"overlay", "br_netfilter", "ip_tables"},
    commands={"ip", "iptables", "mount", "nsenter", "socat", "conntrack", "tc"},
    disk={"/", "/var/lib/etcd"},
)


def script() -> tuple[str, str]:
    return compose(facts_for(PROBES), nonce=NONCE)


async def main(config: str, host: str) -> None:
    cfg = load(config)
    h = cfg.host(host)
    ts = await connect_all(cfg, [h])
    text, _ = script()
    res = await ts[host].run(text)
    await ts[host].close()
    sys.stdout.write(res.stdout)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
