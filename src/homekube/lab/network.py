"""The lab network: one bridge on the machine, a network namespace + veth per host, a guard.

Nothing is forwarded or NATed: hosts reach each other and the machine's bridge address (the
mirror: artifacts and the lab's Debian repository) and nothing else. The nft guard makes that true even when someone
turns on ip_forward on the machine, and rejects (rather than drops) outbound attempts so a
test that probes "no internet" fails fast instead of waiting for a timeout.
"""

from __future__ import annotations

import json
import re

from homekube.lab import settings
from homekube.lab.system import LabError, log, run


def _links(kind: str | None = None) -> list[str]:
    argv = ["ip", "-j", "link", "show"]
    if kind:
        argv += ["type", kind]
    data = json.loads(run(argv).stdout or "[]")
    return [str(link["ifname"]) for link in data]


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _subnet_holder() -> str | None:
    """Another interface on 10.77.0.0/24 (e.g. the reference rig's bridge) would clash."""
    data = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    prefix = settings.NET4_PREFIX + "."
    for link in data:
        if link.get("ifname") == settings.BRIDGE:
            continue
        for addr in link.get("addr_info", []):
            if str(addr.get("local", "")).startswith(prefix):
                return str(link.get("ifname"))
    return None


def bridge_up() -> None:
    holder = _subnet_holder()
    if holder:
        raise LabError(
            f"{settings.NET4_PREFIX}.0/24 is already in use on interface {holder}",
            hint="another test rig is probably up; take it down first",
        )
    if not link_exists(settings.BRIDGE):
        run(["ip", "link", "add", settings.BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{settings.GATEWAY4}/24", "dev", settings.BRIDGE])
        run(["ip", "addr", "add", f"{settings.GATEWAY6}/64", "dev", settings.BRIDGE, "nodad"])
    run(["ip", "link", "set", settings.BRIDGE, "up"])


def guard_ruleset() -> str:
    br, table = settings.BRIDGE, settings.NFT_TABLE
    net4, net6 = f"{settings.NET4_PREFIX}.0/24", f"{settings.NET6_PREFIX}:/64"
    # egress: the machine has ip_forward off, so a packet for the outside would be dropped
    # silently during routing (no ICMP) and a client would hang until its timeout; rejecting
    # it before routing makes "no internet" fail at once. It also keeps hosts off the
    # machine's other addresses. guard: the same for forwarding, should ip_forward be on.
    # "table; delete table; table {...}" replaces the table atomically whether it exists or not.
    return f"""\
table inet {table}
delete table inet {table}
table inet {table} {{
    chain egress {{
        type filter hook prerouting priority -10; policy accept;
        iifname "{br}" ip daddr != {{ {net4}, 224.0.0.0/4, 255.255.255.255 }} \\
            reject with icmpx type admin-prohibited
        iifname "{br}" ip6 daddr != {{ {net6}, fe80::/10, ff00::/8 }} \\
            reject with icmpx type admin-prohibited
    }}
    chain guard {{
        type filter hook forward priority -10; policy accept;
        iifname "{br}" oifname != "{br}" reject with icmpx type admin-prohibited
        oifname "{br}" iifname != "{br}" drop
    }}
}}
"""


def guard_up() -> None:
    run(["nft", "-f", "-"], input=guard_ruleset())


def guard_present() -> bool:
    cp = run(["nft", "list", "table", "inet", settings.NFT_TABLE], check=False)
    return cp.returncode == 0


def guard_down() -> None:
    if guard_present():
        run(["nft", "delete", "table", "inet", settings.NFT_TABLE])


def bridge_down() -> None:
    if link_exists(settings.BRIDGE):
        run(["ip", "link", "del", settings.BRIDGE])


def host_net_up(index: int) -> None:
    """Namespace hk-hN with eth0 (veth peer of hk-v-hN in the bridge) and default routes."""
    ns, veth = settings.netns_name(index), settings.veth_name(index)
    host_net_down(index)
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", settings.BRIDGE, "up"])
    batch = "\n".join(
        [
            "link set lo up",
            f"addr add {settings.host_ipv4(index)}/24 dev eth0",
            f"addr add {settings.host_ipv6(index)}/64 dev eth0 nodad",
            "link set eth0 up",
            f"route add default via {settings.GATEWAY4}",
            f"route add default via {settings.GATEWAY6}",
        ]
    )
    run(["ip", "-n", ns, "-batch", "-"], input=batch + "\n")


def set_host_cable(index: int, *, plugged: bool) -> None:
    """Plug or unplug a host's cable: a powered-off server must not answer pings or RST.

    The bridge side of the veth is used because taking the host's own eth0 down would flush
    its IPv6 address and IPv4 routes; a lost carrier keeps both, as on a real machine.
    """
    run(["ip", "link", "set", settings.veth_name(index), "up" if plugged else "down"])


def host_net_down(index: int) -> None:
    ns, veth = settings.netns_name(index), settings.veth_name(index)
    if ns in netns_list():
        run(["ip", "netns", "del", ns])
    # deleting the namespace destroys the veth pair asynchronously: tolerate it vanishing
    if link_exists(veth):
        run(["ip", "link", "del", veth], check=False)


def leftovers_down() -> None:
    """Namespaces and veths of ours that a crashed run left; matched by our names only."""
    for ns in netns_list():
        if settings.NETNS_RE.match(ns):
            log.info("removing leftover network namespace %s", ns)
            run(["ip", "netns", "del", ns], check=False)
    for link in _links("veth"):
        name = re.sub(r"@.*$", "", link)
        if settings.VETH_RE.match(name):
            log.info("removing leftover veth %s", name)
            run(["ip", "link", "del", name], check=False)
