"""The lab: real test hosts (systemd-nspawn machines booting systemd, with sshd) on one machine.

Used by the rig tests and by `homekube lab ...`. See rig.py for how a host is made and why.

    lab = up(3, config_path="homekube-lab.yaml")   # h1..h3, ready for ssh; cluster.yaml written
    host_exec("h1", "systemctl is-system-running")  # plain OpenSSH, strict host keys
    stop_host("h2"); start_host("h2")               # power cycle, disk kept
    down()                                          # everything off, leftovers included
"""

from homekube.lab.rig import (
    HostStatus,
    Lab,
    LabHost,
    LabStatus,
    build,
    current,
    down,
    etcd_tarball_sha256,
    host_exec,
    mirror_url,
    start_host,
    status,
    stop_host,
    up,
    write_config,
)
from homekube.lab.system import LabError

__all__ = [
    "HostStatus",
    "Lab",
    "LabError",
    "LabHost",
    "LabStatus",
    "build",
    "current",
    "down",
    "etcd_tarball_sha256",
    "host_exec",
    "mirror_url",
    "start_host",
    "status",
    "stop_host",
    "up",
    "write_config",
]
