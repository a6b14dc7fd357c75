"""Turn a host's DNS name from cluster.yaml into the addresses it has now (for the loader).

Addresses end up in certificate SANs, etcd's URLs and kubeadm's advertiseAddress, which must
be IP addresses; so a name is resolved once, when the config is loaded, and the run uses
its address while SSH still connects to the name (so ~/.ssh/known_hosts entries written for
the name keep working).
"""

from __future__ import annotations

import socket


def resolve(name: str) -> list[str]:
    """Every address `name` resolves to (IPv4 first); LookupError says why there is none."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise LookupError(e.strerror or str(e)) from None
    except UnicodeError as e:
        raise LookupError(f"not a valid name ({e})") from None
    v4 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET]
    v6 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET6]
    out = list(dict.fromkeys(v4 + v6))
    if not out:
        raise LookupError("no address")
    return out
