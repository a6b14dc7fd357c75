"""etcd's YAML config file and systemd unit, from a typed model (facts.md §3.3, §4).

etcd reads *only* the config file once `--config-file` is given (flags and ETCD_* env vars are
then ignored), so everything, TLS included, lives in this one file. TLS is on from the first
start: the seed ran plain HTTP first and secured etcd later, leaving every Secret open on the
LAN meanwhile (facts.md §11.8).
"""

from __future__ import annotations

from dataclasses import dataclass

from homekube.config.model import ClusterConfig, HostSpec

# the paths and URLs are etcd's layout; the ones restore and the tests use stay importable here
from homekube.etcd.layout import CONFIG_PATH as CONFIG_PATH
from homekube.etcd.layout import METRICS_URL, PKI_DIR, advertise_client_urls, client_urls
from homekube.etcd.layout import UNIT_PATH as UNIT_PATH
from homekube.etcd.layout import peer_url as peer_url
from homekube.render.yamlout import dump

#: keys only read when a member first starts; kept as written once the member has data
BOOTSTRAP_KEYS = ("initial-cluster", "initial-cluster-state", "initial-cluster-token")


def cluster_token(cfg: ClusterConfig) -> str:
    return f"homekube-{cfg.name}"


def initial_cluster(members: list[tuple[str, str]]) -> str:
    return ",".join(f"{n}={u}" for n, u in members)


@dataclass(frozen=True)
class EtcdConfig:
    """The subset of etcd's config file homekube manages; field names are etcd's keys."""

    name: str
    data_dir: str
    listen_client_urls: list[str]
    advertise_client_urls: list[str]
    listen_peer_urls: list[str]
    initial_advertise_peer_urls: list[str]
    initial_cluster: str
    initial_cluster_state: str
    initial_cluster_token: str
    snapshot_count: int
    heartbeat_interval: int
    election_timeout: int
    listen_metrics_urls: str = METRICS_URL

    def to_dict(self) -> dict[str, object]:
        tls = {
            "cert-file": f"{PKI_DIR}/server.crt",
            "key-file": f"{PKI_DIR}/server.key",
            "client-cert-auth": True,
            "trusted-ca-file": f"{PKI_DIR}/ca.crt",
        }
        peer = {
            "cert-file": f"{PKI_DIR}/peer.crt",
            "key-file": f"{PKI_DIR}/peer.key",
            "client-cert-auth": True,
            "trusted-ca-file": f"{PKI_DIR}/ca.crt",
        }
        return {
            "name": self.name,
            "data-dir": self.data_dir,
            "listen-client-urls": ",".join(self.listen_client_urls),
            "advertise-client-urls": ",".join(self.advertise_client_urls),
            "listen-peer-urls": ",".join(self.listen_peer_urls),
            "initial-advertise-peer-urls": ",".join(self.initial_advertise_peer_urls),
            "initial-cluster": self.initial_cluster,
            "initial-cluster-state": self.initial_cluster_state,
            "initial-cluster-token": self.initial_cluster_token,
            "listen-metrics-urls": self.listen_metrics_urls,
            "snapshot-count": self.snapshot_count,
            "heartbeat-interval": self.heartbeat_interval,
            "election-timeout": self.election_timeout,
            "client-transport-security": tls,
            "peer-transport-security": peer,
        }


def member_config(
    cfg: ClusterConfig,
    h: HostSpec,
    *,
    members: list[tuple[str, str]],
    state: str,
    keep_bootstrap: dict[str, str] | None = None,
) -> EtcdConfig:
    """Config for member `h`. `members` = (name, peer URL) of the cluster it starts into."""
    peers = [peer_url(h)]
    ic = initial_cluster(members)
    token = cluster_token(cfg)
    if keep_bootstrap:
        ic = keep_bootstrap.get("initial-cluster", ic)
        state = keep_bootstrap.get("initial-cluster-state", state)
        token = keep_bootstrap.get("initial-cluster-token", token)
    return EtcdConfig(
        name=h.name,
        data_dir=cfg.etcd.data_dir,
        listen_client_urls=client_urls(h),
        advertise_client_urls=advertise_client_urls(h),
        listen_peer_urls=peers,
        initial_advertise_peer_urls=peers,
        initial_cluster=ic,
        initial_cluster_state=state,
        initial_cluster_token=token,
        snapshot_count=cfg.etcd.snapshot_count,
        heartbeat_interval=cfg.etcd.heartbeat_ms,
        election_timeout=cfg.etcd.election_ms,
    )


def config_file(c: EtcdConfig) -> bytes:
    head = (
        "# Managed by homekube. etcd reads only this file (--config-file): flags and ETCD_*\n"
        "# variables are ignored. initial-* keys are read once, when the member first starts.\n"
    )
    return (head + dump(c.to_dict())).encode()


def unit_file(binary: str, *, container: bool = False) -> bytes:
    """systemd unit; Type=notify because etcd signals READY=1 once it serves (facts.md §3.3)."""
    lines = [
        "# Managed by homekube.",
        "[Unit]",
        "Description=etcd key-value store (homekube)",
        "Documentation=https://etcd.io/docs/",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "User=etcd",
        "Group=etcd",
        f"ExecStart={binary} --config-file={CONFIG_PATH}",
        "Restart=on-failure",
        "RestartSec=2s",
        "TimeoutStartSec=120s",
        "LimitNOFILE=65536",
        # etcd is the cluster's memory: the OOM killer should pick almost anything else first.
        # (A negative adjustment needs CAP_SYS_RESOURCE; containers without it skip it.)
        *([] if container else ["OOMScoreAdjust=-999"]),
        "Nice=-5" if not container else "Nice=0",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=0",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines).encode()


def parse_bootstrap(existing: bytes | None) -> dict[str, str]:
    """Read the bootstrap-only keys back from a config file homekube wrote earlier."""
    if not existing:
        return {}
    out: dict[str, str] = {}
    for line in existing.decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in BOOTSTRAP_KEYS and not line.startswith(" "):
            out[key.strip()] = value.strip().strip('"')
    return out
