"""The Kubernetes layer: packages and runtime, kubeadm, the CNI and the web UI as pure phases.

Validated, not executed here: nothing on the machine this was written on can run kubeadm, a
kubelet, a container runtime or a CNI, so the commands below are built from the upstream
documentation (facts.md §2, §6–§10) and checked by unit tests, not by a cluster.

Phases and their stages (phases run in this order, after host preparation and etcd; a stage
starts when the one before it has finished on every host):

    k8s-packages  check first  check that every artifact this host will download can be
                               fetched, on the first control plane first, so an offline
                               machine stops with one message
                  check        the same check on every other node
                  install      repositories, signing keys, the runtime (cri-o's drop-in, or
                               containerd and runc from their release binaries with homekube's
                               config and unit), registry files, packages, holds, units
    kubeadm       init         first control plane: cluster CA (if none yet), `kubeadm init`
                               (its config carries the 15-minute join token, so kubeadm makes
                               no 24-hour default)
                  token        first control plane of a running cluster: a 15-minute bootstrap
                               token, and `upload-certs` when a control plane joins
                  control-plane join  extra control planes join, one at a time
                  worker join  workers join, in parallel
    calico                     manifests (pinned by version; SHA-256 from the mirror's
                               SHA256SUMS), CRDs, operator, Installation, wait for TigeraStatus
                               `calico` Available
    flannel                    (network.cni: flannel, instead of calico) homekube's flannel
                               objects, wait for the DaemonSet's rollout
    ui                         Headlamp objects, wait for the rollout

Secrets (bootstrap token, certificate key, the cluster CA key) are generated here at plan time,
exactly like the etcd keys in :mod:`homekube.components.etcd`; they only travel inside files
written 0600 (on the script's stdin, never in argv) and never appear in a command, a
description or a diff: plans show the files with :data:`REDACTED_TOKEN` and friends.

Why homekube makes the cluster CA itself when there is none yet: a joining node pins the CA
(``caCertHashes``), so its hash must be known when the plan is made, and the executor cannot
carry a value computed on one host (``openssl`` on the first control plane) to another host
within one run. kubeadm uses an existing ``ca.crt``/``ca.key`` ("Using existing ca certificate
authority") and makes everything else itself. For a cluster that already runs, the hash is
computed from the ``ca.crt`` gathered as a fact — the same SHA-256 over the DER
SubjectPublicKeyInfo that ``openssl x509 -pubkey | openssl pkey -pubin -outform der |
sha256sum`` gives.

API work (server-side apply with field manager ``homekube``, waits) runs as ``kubectl`` on the
first control plane with ``/etc/kubernetes/admin.conf``: the engine's actions are host
commands, so this is how one `apply` stays one plan. :mod:`homekube.kube` offers the same
operations from the operator's machine (lightkube through an SSH-forwarded port); `homekube ui`
uses it today.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from ruamel.yaml import YAML

from homekube.components.artifacts import Artifact as DownloadArtifact
from homekube.components.base import Context, Phase
from homekube.components.cp_config import Stages, control_plane_config_steps
from homekube.components.downloads import TEMP_DIR, fetch_verified
from homekube.components.endpoint import EndpointPhase
from homekube.components.kubeadm_base import (
    ADMIN_CONF,
    APISERVER_MANIFEST,
    KUBECTL,
    KUBELET_CONF,
    LOG_DIR,
)
from homekube.components.kubeadm_base import kubeadm_script as _kubeadm
from homekube.components.reset import PACKAGES_RECORD
from homekube.components.runtime import (
    containerd_artifacts,
    containerd_steps,
    registry_steps,
    runtime_fact_lines,
    runtime_files,
)
from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import RefusedError
from homekube.facts.base import Fact, shell_quote
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.osfamily import FAMILIES, OsFamily, family_of, fetch_keyring_command
from homekube.pki.inventory import KUBEADM_KUBECONFIGS, parse_pem_sections
from homekube.pki.issue import generate_key, issue_ca
from homekube.pki.spec import CA_VALIDITY, CertSpec
from homekube.plan.model import Action, Change, NoChange, Run, Step, WriteFile
from homekube.plan.order import Order, declare, one_at_a_time, parallel
from homekube.plan.resources import file_step, unit_step
from homekube.render.flannel import FLANNEL_DAEMONSET, FLANNEL_NAMESPACE, flannel_objects
from homekube.render.images import image
from homekube.render.kubernetes import (
    CALICO_MANIFESTS,
    CALICO_VERSION,
    CERTIFICATES_DIR,
    CRIO_DROPIN_PATH,
    HEADLAMP_NAMESPACE,
    PAUSE_VERSIONS,
    REDACTED_CERTIFICATE_KEY,
    REDACTED_TOKEN,
    TIGERA_OPERATOR_IMAGE,
    Artifact,
    RepoFile,
    calico_installation,
    calico_manifest_urls,
    crio_dropin,
    headlamp_objects,
    kubeadm_init_config,
    kubeadm_join_config,
    repo_files,
)
from homekube.render.runtime import CONTAINERD_CONFIG, CONTAINERD_UNIT, registry_files
from homekube.render.yamlout import dump_all
from homekube.shell import assign, poll_until, script
from homekube.shell import sh as hk_sh

if TYPE_CHECKING:  # the pydantic models cost ~55 ms to import: only when rendering
    from homekube.render import kubeadm_types as kt

__all__ = [
    "ADMIN_CONF",
    "ALL_PHASE_NAMES",
    "CALICO_DIR",
    "CA_CRT",
    "CA_KEY",
    "CLUSTER_DIR",
    "INIT_CONFIG",
    "JOIN_CONFIG",
    "KUBEADM_CERTS",
    "KUBECTL",
    "KUBELET_CONF",
    "KUBELET_PKI",
    "LAYER_OFF",
    "TOKEN_CONFIG",
    "UPLOAD_CERTS_CONFIG",
    "CalicoPhase",
    "FlannelPhase",
    "KubeFacts",
    "KubeadmPhase",
    "KubernetesPackagesPhase",
    "UiPhase",
    "artifact_check_command",
    "artifact_urls",
    "ca_cert_hash",
    "calico_artifacts",
    "cluster_files",
    "installed_minor",
    "is_node",
    "kube_cert_fact",
    "kube_cert_pems",
    "kube_fact",
    "kube_facts",
    "kubernetes_ca_spec",
    "kubernetes_phases",
    "kubernetes_probes",
    "parse_kube_fact",
    "primary",
    "rendered_kubernetes_files",
    "token_config",
    "upgrading_from",
    "with_bootstrap_token",
]

# ---------------------------------------------------------------------------------------------
# paths and commands

HK_DIR = "/etc/kubernetes/homekube"
INIT_CONFIG = f"{HK_DIR}/kubeadm-init.yaml"
CLUSTER_DIR = f"{HK_DIR}/cluster"
CALICO_DIR = f"{HK_DIR}/calico/{CALICO_VERSION}"
#: one-shot files holding secrets live on tmpfs and are removed once used
RUN_DIR = "/run/homekube"
JOIN_CONFIG = f"{RUN_DIR}/kubeadm-join.yaml"
TOKEN_CONFIG = f"{RUN_DIR}/bootstrap-token.yaml"
UPLOAD_CERTS_CONFIG = f"{RUN_DIR}/upload-certs.yaml"
#: kubeadm's own certificates on a control plane (the etcd-CA ones are homekube's)
KUBEADM_CERTS = tuple(f"/etc/kubernetes/pki/{n}.crt" for n in (
    "ca", "apiserver", "apiserver-kubelet-client", "front-proxy-ca", "front-proxy-client"))
CA_CRT = f"{CERTIFICATES_DIR}/ca.crt"
CA_KEY = f"{CERTIFICATES_DIR}/ca.key"

SSA = f"{KUBECTL} apply --server-side --field-manager=homekube"

K8S_PACKAGES = ("cri-o", "kubelet", "kubeadm", "kubectl")
#: the Kubernetes packages whose minor must equal kubernetes.version (CRI-O's minor follows it)
VERSIONED = ("cri-o", "kubelet", "kubeadm", "kubectl")
#: with containerd, the runtime comes from its release binaries and the CNI plugins (bridge,
#: host-local, portmap, loopback) from the Kubernetes repository's kubernetes-cni package
CONTAINERD_PACKAGES = ("kubelet", "kubeadm", "kubectl", "kubernetes-cni")


def k8s_packages(cfg: ClusterConfig) -> tuple[str, ...]:
    """The packages k8s-packages installs (and holds, on Debian) for the configured runtime."""
    return K8S_PACKAGES if cfg.kubernetes.runtime == "cri-o" else CONTAINERD_PACKAGES


def held_packages(cfg: ClusterConfig) -> tuple[str, ...]:
    """The packages `apt-mark hold` keeps at the cluster's version."""
    return K8S_PACKAGES if cfg.kubernetes.runtime == "cri-o" else ("kubelet", "kubeadm", "kubectl")


def versioned_packages(cfg: ClusterConfig) -> tuple[str, ...]:
    """The installed packages whose minor is the cluster's (kubernetes-cni has its own numbers)."""
    return VERSIONED if cfg.kubernetes.runtime == "cri-o" else ("kubelet", "kubeadm", "kubectl")


def package_pins(cfg: ClusterConfig, fam: OsFamily, packages: Sequence[str]) -> list[str]:
    """`pkg=1.36.*` (apt) / `pkg-1.36.*` (dnf); a configured patch pins the Kubernetes ones.

    CRI-O follows the minor only (its patch numbers are independent, facts.md §2.1);
    kubernetes-cni and container-selinux are not Kubernetes-versioned and stay unpinned.
    """
    minor, version = cfg.kubernetes.minor, cfg.kubernetes.version
    out = []
    for p in packages:
        if p not in VERSIONED:
            out.append(p)
            continue
        glob = f"{version}-*" if version != minor and p != "cri-o" else f"{minor}.*"
        out.append(fam.version_pin(p, glob))
    return out

TOKEN_TTL = "15m0s"  # noqa: S105 - a duration
TOKEN_GROUPS = ["system:bootstrappers:kubeadm:default-node-token"]

LAYER_OFF = "Kubernetes layer is off in cluster.yaml"

#: The renderer insists on a SHA-256 for mirrored Calico manifests. Until cluster.yaml can
#: carry pins (proposed: `artifacts.sha256`), the pin is the mirror's own SHA256SUMS, read on
#: the host at apply time; this value only gets the mirror URLs out of the renderer.
_FROM_SHA256SUMS = "0" * 64

_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"  # noqa: S105 - [a-z0-9]
_HEADER = "# Written by homekube from cluster.yaml ({name}); local edits are overwritten.\n"


# ---------------------------------------------------------------------------------------------
# facts


@dataclass(frozen=True)
class DeprecatedApi:
    """One series of kube-apiserver's apiserver_requested_deprecated_apis gauge."""

    group: str
    version: str
    resource: str
    removed_release: str  # e.g. "1.36"

    @property
    def name(self) -> str:
        """resource.version.group, as `kubectl api-resources` spells it (core: no group)."""
        return ".".join(x for x in (self.resource, self.version, self.group) if x)


def parse_deprecated(text: str) -> tuple[DeprecatedApi, ...]:
    """`group=,removed_release=1.36,resource=x,subresource=,version=v1beta1 ...` (the metric's
    labels, quotes stripped) -> the series that name a removal release."""
    out = []
    for word in text.split():
        labels = dict(item.partition("=")[::2] for item in word.split(","))
        if re.fullmatch(r"\d+\.\d+", labels.get("removed_release", "")) and labels.get("resource"):
            out.append(DeprecatedApi(labels.get("group", ""), labels.get("version", ""),
                                     labels["resource"], labels["removed_release"]))
    return tuple(sorted(set(out), key=lambda d: (d.removed_release, d.name)))


@dataclass(frozen=True)
class KubeFacts:
    """What a host says about its Kubernetes side (one snippet in the one facts exec)."""

    kubeadm: str | None = None  # `kubeadm version -o short`, e.g. v1.36.4
    ipip: bool = True  # the kernel can do IP-in-IP (module loaded, built in or loadable)
    held: frozenset[str] = frozenset()  # apt-mark showhold
    readyz: str | None = None  # None: no admin.conf here; "ok" when the API answers
    crd: bool = False  # installations.operator.tigera.io exists
    operator_image: str | None = None  # image of deployment tigera-operator (None: missing)
    installation: bool = False  # Installation `default` exists
    calico_available: bool | None = None  # TigeraStatus calico Available (None: unknown)
    headlamp: bool = False  # deployment headlamp exists
    bindings: frozenset[str] = frozenset()  # ClusterRoleBindings managed by homekube
    nodes: frozenset[str] = field(default_factory=frozenset)
    #: node name -> its Ready condition ("True", "False", "Unknown")
    node_ready: Mapping[str, str] = field(default_factory=dict)
    flannel: tuple[int, int] | None = None  # DaemonSet kube-flannel-ds: (ready, desired)
    containerd: str | None = None  # installed by homekube, e.g. 2.3.4 (None: not there)
    runc: str | None = None  # e.g. 1.4.3
    #: APIs with a planned removal that clients requested since the API server started
    #: (its apiserver_requested_deprecated_apis metric); asked only while the running
    #: kube-apiserver is not the minor cluster.yaml wants, i.e. before an upgrade
    deprecated: tuple[DeprecatedApi, ...] = ()

    @property
    def api_ok(self) -> bool:
        return self.readyz == "ok"

    @property
    def operator(self) -> bool:
        return self.operator_image is not None


def parse_kube_fact(text: str) -> KubeFacts:
    kv: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            kv[k.strip()] = v.strip()

    def words(key: str) -> frozenset[str]:
        return frozenset(kv.get(key, "").split())

    avail = kv.get("tigerastatus")
    # nodes: "name=ReadyStatus ..." (older scripts: bare names)
    ready = dict(w.partition("=")[::2] for w in kv.get("nodes", "").split())
    ds = kv.get("flannel", "").split()
    flannel = (int(ds[0]), int(ds[1])) if len(ds) == 2 and all(x.isdigit() for x in ds) else None
    return KubeFacts(
        kubeadm=kv.get("kubeadm") or None,
        ipip=kv.get("ipip", "yes") != "no",
        held=words("held"),
        readyz=kv.get("readyz") if "readyz" in kv else None,
        crd=bool(kv.get("crd")),
        operator_image=kv.get("operator") or None,
        installation=bool(kv.get("installation")),
        calico_available=None if avail is None else avail == "True",
        headlamp=bool(kv.get("headlamp")),
        bindings=words("bindings"),
        nodes=frozenset(ready),
        node_ready={n: r or "Unknown" for n, r in ready.items()},
        flannel=flannel,
        containerd=(kv.get("containerd") or "").removeprefix("v") or None,
        runc=(kv.get("runc") or "").removeprefix("v") or None,
        deprecated=parse_deprecated(kv.get("deprecated", "")),
    )


def kube_fact(cfg: ClusterConfig) -> Fact[KubeFacts]:
    """kubeadm and runtime versions, IPIP support, holds; on a control plane the API's view.

    The API questions follow cluster.yaml: Calico's objects with Calico, the flannel
    DaemonSet with flannel (each `kubectl` call costs ~50 ms of CPU on the host, every run).
    Once /readyz answers, they run at the same time (with `kubeadm version`), each into its
    own file: on a busy control plane they took ~1 s of a no-op's facts one after another.
    """
    k = f"{KUBECTL} --request-timeout=5s"
    jp_avail = "{.status.conditions[?(@.type==\"Available\")].status}"
    jp_names = '{range .items[*]}{.metadata.name}{" "}{end}'
    jp_ready = ('{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}'
                '{" "}{end}')
    jp_image = "{.spec.template.spec.containers[0].image}"
    jp_ds = "{.status.numberReady} {.status.desiredNumberScheduled}"
    if cfg.network.cni == "calico":
        cni = (
            f"    kv crd \"$({k} get crd installations.operator.tigera.io -o name "
            "--ignore-not-found)\"\n"
            f"    kv operator \"$({k} -n tigera-operator get deployment tigera-operator "
            f"-o jsonpath='{jp_image}' --ignore-not-found)\"\n"
            f"    kv installation \"$({k} get installations.operator.tigera.io default -o name "
            "--ignore-not-found 2>/dev/null)\"\n"
            f"    s=$({k} get tigerastatuses.operator.tigera.io calico -o jsonpath='{jp_avail}' "
            "2>/dev/null) && kv tigerastatus \"$s\"\n"
        )
    else:
        cni = (
            f"    kv flannel \"$({k} -n {FLANNEL_NAMESPACE} get daemonset {FLANNEL_DAEMONSET} "
            f"-o jsonpath='{jp_ds}' --ignore-not-found)\"\n"
        )
    runtime = "".join(line + "\n" for line in runtime_fact_lines(cfg))
    cmd = (
        'kv() { printf "%s=%s\\n" "$1" "$2"; }\n'
        "kt=$(mktemp -d /tmp/homekube-kf.XXXXXX) || exit 1\n"
        "trap 'rm -rf \"$kt\"' EXIT\n"
        + runtime +
        "{ command -v kubeadm >/dev/null && kv kubeadm \"$(kubeadm version -o short 2>/dev/null)\"; "
        "} > \"$kt/kubeadm\" &\n"
        "if [ -d /sys/module/ipip ] || modinfo ipip >/dev/null 2>&1; then kv ipip yes; "
        "else kv ipip no; fi\n"
        "command -v apt-mark >/dev/null && "
        "kv held \"$(apt-mark showhold 2>/dev/null | tr '\\n' ' ')\"\n"
        f"if [ -f {ADMIN_CONF} ]; then\n"
        "  if command -v kubectl >/dev/null; then\n"
        f"    r=$({k} get --raw=/readyz 2>&1 | head -c 200 | tr '\\n' ' ' | sed 's/ *$//')\n"
        "  else\n"
        "    r=$(curl -sk --max-time 5 https://127.0.0.1:6443/readyz 2>&1 | head -c 200 "
        "| tr '\\n' ' ')\n"
        "  fi\n"
        '  kv readyz "${r:-no answer}"\n'
        '  if [ "$r" = ok ] && command -v kubectl >/dev/null; then\n'
        f"    kv nodes \"$({k} get nodes -o jsonpath='{jp_ready}')\" > \"$kt/nodes\" &\n"
        "    {\n" + cni + "    } > \"$kt/cni\" &\n"
        f"    kv headlamp \"$({k} -n {HEADLAMP_NAMESPACE} get deployment headlamp -o name "
        "--ignore-not-found)\" > \"$kt/headlamp\" &\n"
        f"    kv bindings \"$({k} get clusterrolebindings -l app.kubernetes.io/managed-by=homekube "
        f"-o jsonpath='{jp_names}')\" > \"$kt/bindings\" &\n"
        # before an upgrade only (the running API server is another minor): which APIs the
        # new minor removes were requested; /metrics is large, so not on every run
        f"    if ! grep -q 'kube-apiserver:v{cfg.kubernetes.minor}\\.' {APISERVER_MANIFEST} "
        "2>/dev/null; then\n"
        f"      kv deprecated \"$({k} get --raw=/metrics 2>/dev/null | sed -n "
        "'s/^apiserver_requested_deprecated_apis{\\(.*\\)} 1$/\\1/p' | tr -d '\"' "
        "| tr '\\n' ' ')\" > \"$kt/deprecated\" &\n"
        "    fi\n"
        "  fi\n"
        "fi\n"
        "wait\n"
        'cat "$kt"/* 2>/dev/null'
    )
    return Fact("kubernetes", cmd, parse_kube_fact)


#: where the kubelet keeps its certificates
KUBELET_PKI = "/var/lib/kubelet/pki"


def kube_cert_fact(host: HostSpec) -> Fact[dict[str, bytes]]:
    """The public certificates not in a file of their own: the client certificates inside
    kubeadm's kubeconfigs (control planes) and the kubelet's (every node); the key stays on
    the host. Sections `@@<name>` as :func:`homekube.pki.inventory.parse_pem_sections` reads."""
    cert = "sed -n '/-BEGIN CERTIFICATE-/,/-END CERTIFICATE-/p'"
    lines = []
    if host.has("control-plane"):
        for name in KUBEADM_KUBECONFIGS:
            f = f"/etc/kubernetes/{name}"
            lines.append(f"[ -f {f} ] && {{ echo '@@{name}'; sed -n 's/^ *client-certificate-data: *//p' "
                         f"{f} | head -n 1 | base64 -d; echo; }}")
    # a rotated serving certificate (serverTLSBootstrap) replaces the self-signed one: last wins
    for name, f in (("kubelet-client", f"{KUBELET_PKI}/kubelet-client-current.pem"),
                    ("kubelet-serving", f"{KUBELET_PKI}/kubelet.crt"),
                    ("kubelet-serving", f"{KUBELET_PKI}/kubelet-server-current.pem")):
        lines.append(f"[ -f {f} ] && {{ echo '@@{name}'; {cert} {f}; }}")
    return Fact("kube-certs", "\n".join(lines), parse_pem_sections)


def kube_cert_pems(f: HostFacts) -> dict[str, bytes]:
    v = f.extra.get("kube-certs")
    return v if isinstance(v, dict) else {}


def kube_facts(f: HostFacts) -> KubeFacts:
    v = f.extra.get("kubernetes")
    return v if isinstance(v, KubeFacts) else KubeFacts()


def is_node(h: HostSpec) -> bool:
    return h.has("control-plane") or h.has("worker")


def _probes(config: ClusterConfig, host: HostSpec) -> Probes:
    """Everything the Kubernetes phases read, gathered once (probes are merged across phases)."""
    if not config.kubernetes.enabled or not is_node(host):
        return Probes()
    files: dict[str, bool] = {ADMIN_CONF: True, KUBELET_CONF: True}
    if config.kubernetes.runtime == "cri-o":
        files[CRIO_DROPIN_PATH] = False
    else:
        files |= {CONTAINERD_CONFIG: False, CONTAINERD_UNIT: False}
    files |= {path: False for path, _ in registry_files(config)}
    for fam in FAMILIES.values():
        for rf in repo_files(config, fam):
            files[rf.path] = False
            if rf.keyring:
                files[rf.keyring] = True  # binary; existence and hash are enough
    if host.has("control-plane"):
        files |= {CA_CRT: False, CA_KEY: True}
        files |= dict.fromkeys(KUBEADM_CERTS, False)  # public certificates: expiry in `status`
        if config.network.cni == "calico":
            files |= {f"{CALICO_DIR}/{name}": True for name in CALICO_MANIFESTS}
        files |= dict.fromkeys(cluster_file_paths(config), False)
    runtime_unit = "crio.service" if config.kubernetes.runtime == "cri-o" else "containerd.service"
    return Probes(
        files=files,
        units={runtime_unit, "kubelet.service"},
        packages={*k8s_packages(config), "container-selinux", "gpg", "gnupg2"},
        extra=[kube_fact(config), kube_cert_fact(host)],
    )


def kubernetes_probes(config: ClusterConfig, host: HostSpec) -> Probes:
    """The probes of the Kubernetes phases, for phases living in other modules (k8s-upgrade)."""
    return _probes(config, host)


# ---------------------------------------------------------------------------------------------
# which control plane leads


State = Literal["ready", "down", "fresh"]


@dataclass(frozen=True)
class Primary:
    host: HostSpec
    state: State  # ready: API answers; down: initialised, API silent; fresh: not initialised
    why: str


def primary(ctx: Context) -> Primary | None:
    """The control plane that inits, creates tokens and runs kubectl; None without one."""
    cps = [h for h in ctx.config.control_planes if h.name in ctx.facts]
    if not cps:
        return None
    for h in cps:
        f = ctx.facts[h.name]
        if f.file(ADMIN_CONF) is not None and kube_facts(f).api_ok:
            return Primary(h, "ready", f"{h.name}: {ADMIN_CONF} exists and the API answers /readyz")
    for h in cps:
        f = ctx.facts[h.name]
        if f.file(ADMIN_CONF) is not None:
            said = kube_facts(f).readyz or "no answer"
            return Primary(h, "down", f"{h.name} has {ADMIN_CONF} but /readyz says: {said}")
    return Primary(cps[0], "fresh", f"no control plane has {ADMIN_CONF}")


# ---------------------------------------------------------------------------------------------
# artifacts and the reachability check


def calico_artifacts(cfg: ClusterConfig) -> tuple[list[Artifact], str | None]:
    """The Calico manifests to download (CRDs first) and, with a mirror, its SHA256SUMS URL."""
    if not cfg.artifacts.mirror:
        return calico_manifest_urls(cfg), None
    arts = calico_manifest_urls(cfg, sha256={n: _FROM_SHA256SUMS for n in CALICO_MANIFESTS})
    sums = arts[0].url.rsplit("/", 1)[0] + "/SHA256SUMS"
    return [Artifact(a.url, a.filename, None) for a in arts], sums


def _repo_index_url(rf: RepoFile) -> str:
    """The repository's signed index, next to its key (deb: flat repo; rpm: repodata)."""
    if rf.keyring is not None:
        return rf.key_url.rsplit("/", 1)[0] + "/InRelease"
    return rf.key_url.removesuffix(".key")


def _packages_missing(cfg: ClusterConfig, f: HostFacts, fam: OsFamily) -> list[str]:
    want = list(k8s_packages(cfg)) + fam.packages(fam.node_extras)
    return [p for p in want if not f.installed(p)]


def _runtime_versions(f: HostFacts) -> dict[str, str | None]:
    kf = kube_facts(f)
    return {"containerd": kf.containerd, "runc": kf.runc}


def artifact_urls(ctx: Context, h: HostSpec) -> list[str]:
    """Every URL `h` will fetch in this plan (keys, repository indexes, runtime binaries with
    their checksum files, Calico manifests)."""
    cfg = ctx.config
    f = ctx.facts[h.name]
    fam = family_of(f.os)
    urls: list[str] = []
    if fam is not None:
        repos = repo_files(cfg, fam)
        missing_keys = [rf for rf in repos if rf.keyring and f.file(rf.keyring) is None]
        if _packages_missing(cfg, f, fam) or missing_keys:
            for rf in repos:
                urls += [rf.key_url, _repo_index_url(rf)]
    if cfg.kubernetes.runtime == "containerd":
        for a in containerd_artifacts(cfg, f, _runtime_versions(f)):
            urls += [a.url] + ([a.sums_url] if a.sums_url and not a.sha256 else [])
    p = primary(ctx)
    if cfg.network.cni == "calico" and p is not None and p.host.name == h.name and p.state != "down":
        arts, sums = calico_artifacts(cfg)
        if any(f.file(f"{CALICO_DIR}/{a.filename}") is None for a in arts):
            urls += [a.url for a in arts] + ([sums] if sums else [])
    return list(dict.fromkeys(urls))


def artifact_check_command(urls: Sequence[str], *, mirror: str | None) -> str:
    """One `curl -fsI` per URL, all in parallel in this one exec, then one message.

    Prints ``cannot fetch <first> (and N more): <reason>`` plus one line per other URL and
    exits 1 when anything is missing, so `apply` stops before the first Kubernetes change.
    """
    not_found = "not on the mirror" if mirror else "not found"
    return "\n".join([assign("hk_not_found", not_found).text,
                      "set -- " + " ".join(shell_quote(u) for u in urls),
                      script("artifact-check.sh")])


# ---------------------------------------------------------------------------------------------
# helpers


def ca_cert_hash(pem: bytes) -> str:
    """kubeadm's discovery pin: ``sha256:`` + SHA-256 of the CA's DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def new_token() -> str:
    pick = secrets.choice
    return "".join(pick(_TOKEN_ALPHABET) for _ in range(6)) + "." + "".join(
        pick(_TOKEN_ALPHABET) for _ in range(16))


def new_certificate_key() -> str:
    return secrets.token_hex(32)


def _bootstrap_token(token: str) -> kt.BootstrapToken:
    from homekube.render import kubeadm_types as kt
    return kt.BootstrapToken(
        token=token,
        description="homekube: joins nodes in this apply; expires after 15 minutes",
        ttl=TOKEN_TTL,
        usages=["signing", "authentication"],
        groups=TOKEN_GROUPS,
    )


def token_config(cfg: ClusterConfig, token: str) -> str:
    """`kubeadm token create --config` input: the token travels in a file, not in argv."""
    from homekube.render import kubeadm_types as kt
    init = kt.InitConfiguration(bootstrap_tokens=[_bootstrap_token(token)])
    return _HEADER.format(name=cfg.name) + dump_all([init.to_dict()])


def with_bootstrap_token(text: str, token: str) -> str:
    """Add our short-lived join token to a rendered init config.

    Without it `kubeadm init` creates a default token valid for 24 h; with it the only token
    is the one this apply uses, and it dies after 15 minutes.
    """
    head = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    docs: list[dict[str, Any]] = [d for d in YAML(typ="safe").load_all(body) if d is not None]
    first = docs[0]
    docs[0] = {"apiVersion": first["apiVersion"], "kind": first["kind"],
               "bootstrapTokens": [_bootstrap_token(token).to_dict()],
               **{k: v for k, v in first.items() if k not in ("apiVersion", "kind")}}
    return head + dump_all(docs)


def _secret_diff(path: str, redacted: str) -> str:
    """A creation diff of a secret file, shown with placeholders instead of the secrets."""
    return "".join(difflib.unified_diff(
        [], redacted.splitlines(keepends=True),
        fromfile=f"{path} (host)", tofile=f"{path} (homekube; secrets shown as placeholders)"))


def _minor(version: str | None) -> str | None:
    if not version:
        return None
    m = re.match(r"(?:\d+:)?v?(\d+\.\d+)", version)
    return m.group(1) if m else None


def installed_minor(f: HostFacts) -> str | None:
    """The lowest minor among the installed cri-o/kubelet/kubeadm/kubectl packages (None: none)."""
    minors = [m for p in VERSIONED if f.installed(p)
              if (m := _minor(f.packages[p].version)) is not None]
    return min(minors, key=lambda m: tuple(int(x) for x in m.split("."))) if minors else None


def upgrading_from(ctx: Context, f: HostFacts) -> str | None:
    """The minor a member of an initialised cluster runs when cluster.yaml wants another one.

    Such a host belongs to the k8s-upgrade phase (repositories, CRI-O drop-in, packages,
    holds); None for every other host, which k8s-packages handles as usual.
    """
    p = primary(ctx)
    if p is None or p.state == "fresh" or not is_node(ctx.config.host(f.host)):
        return None
    if f.host != p.host.name and f.file(KUBELET_CONF) is None:
        return None  # not joined yet: k8s-packages installs the wanted minor, kubeadm joins it
    have = installed_minor(f)
    return have if have is not None and have != ctx.config.kubernetes.minor else None


def _off(ctx: Context, phase: str) -> list[Step]:
    return [NoChange(h.name, phase, "kubernetes", LAYER_OFF) for h in ctx.hosts()]


def _kubeadm_version(cfg: ClusterConfig, f: HostFacts) -> str | None:
    """The installed kubeadm's version when it is the configured minor, else None."""
    v = kube_facts(f).kubeadm
    return v if v and _minor(v) == cfg.kubernetes.minor else None


def _render(fn: str, call: Any) -> Any:
    """Call a renderer; a ValueError there is a cluster.yaml problem, not a bug."""
    try:
        return call()
    except ValueError as e:
        raise RefusedError(f"cannot render {fn}: {e}", hint="fix cluster.yaml") from None


# ---------------------------------------------------------------------------------------------
# phase 1: packages


CHECK_FIRST, CHECK, INSTALL = declare(
    "k8s-packages", parallel("check first"), parallel("check"), parallel("install"))


class KubernetesPackagesPhase:
    name = "k8s-packages"
    title = "Kubernetes packages (repositories, runtime, kubelet, kubeadm, kubectl)"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return _probes(config, host)

    def plan(self, ctx: Context) -> list[Step]:
        if not ctx.config.kubernetes.enabled:
            return _off(ctx, self.name)
        steps: list[Step] = []
        p = primary(ctx)
        first = p.host.name if p is not None else None
        for h in ctx.hosts():
            if not is_node(h):
                steps.append(NoChange(h.name, self.name, "kubernetes",
                                      "etcd-only host: no Kubernetes packages"))
                continue
            urls = artifact_urls(ctx, h)
            where = "the mirror" if ctx.config.artifacts.mirror else "upstream"
            if urls:
                steps.append(Change(
                    h.name, self.name, "artifacts",
                    f"check that {len(urls)} artifact(s) can be fetched",
                    "stop before the first Kubernetes change if a key, repository or manifest "
                    f"is out of reach ({where})",
                    (Run(artifact_check_command(urls, mirror=ctx.config.artifacts.mirror),
                         f"curl -fsI {len(urls)} URL(s): " + ", ".join(urls)),),
                    order=CHECK_FIRST if h.name == first else CHECK,
                ))
            steps += self._host(ctx, ctx.facts[h.name])
        return steps

    def _host(self, ctx: Context, f: HostFacts) -> list[Step]:
        cfg = ctx.config
        h, ph = f.host, self.name
        fam = family_of(f.os)
        if fam is None:
            return [NoChange(h, ph, "packages", f"unsupported OS {f.os.pretty}", warning=True)]
        old = upgrading_from(ctx, f)
        if old is not None:
            # one owner per file: writing the new repositories/drop-in here too would restart
            # CRI-O under a kubelet of the old minor; k8s-upgrade does it node by node
            return [NoChange(h, ph, "packages",
                             f"Kubernetes {old} → {cfg.kubernetes.minor}: repositories, CRI-O "
                             "drop-in and packages are switched by the k8s-upgrade phase")]
        missing = _packages_missing(cfg, f, fam)
        runtime, runtime_unit = _runtime_steps(cfg, f, ph, restart_allowed=not missing)
        steps = [*_repository_steps(cfg, f, fam, ph), *runtime,
                 *_package_steps(cfg, f, fam, ph, missing), runtime_unit,
                 _kubelet_enabled(f, ph, missing)]
        # one stage: each host runs its steps in this order, hosts in parallel
        return [replace(s, order=INSTALL) if isinstance(s, Change) else s for s in steps]


def _repository_steps(cfg: ClusterConfig, f: HostFacts, fam: OsFamily, ph: str) -> list[Step]:
    """The tools to store keyrings, each repository's signing key and its repository file."""
    h = f.host
    steps: list[Step] = []
    repos = repo_files(cfg, fam)
    tools = [p for p in fam.packages(fam.keyring_tools) if not f.installed(p)]
    if tools and any(rf.keyring and f.file(rf.keyring) is None for rf in repos):
        steps.append(Change(h, ph, f"packages {' '.join(tools)}", f"install {', '.join(tools)}",
                            "apt keyrings are stored dearmored (gpg --dearmor)",
                            (Run(fam.install_command(tools), f"install {' '.join(tools)}"),)))
    for rf in repos:
        if rf.keyring:
            if f.file(rf.keyring) is None:
                steps.append(Change(
                    h, ph, f"keyring {rf.keyring}", f"install the signing key {rf.keyring}",
                    "apt verifies the repository with this key only (signed-by)",
                    (Run(fetch_keyring_command(rf), f"fetch {rf.key_url} into {rf.keyring}"),),
                ))
            else:
                steps.append(NoChange(h, ph, f"keyring {rf.keyring}", f"{rf.keyring} exists"))
        steps.append(file_step(f, ph, WriteFile(rf.path, rf.content.encode(), rf.mode),
                               f"Kubernetes {cfg.kubernetes.minor} packages come from this "
                               "repository (one per minor)"))
    return steps


def _runtime_steps(cfg: ClusterConfig, f: HostFacts, ph: str, *,
                   restart_allowed: bool) -> tuple[list[Step], Step]:
    """The runtime's files (before the packages) and its unit step (after them).

    `restart_allowed`: the runtime is installed already, so a changed drop-in needs a restart
    (on a fresh install the package's first start reads it).
    """
    if cfg.kubernetes.runtime != "cri-o":
        runtime = containerd_steps(cfg, f, ph, _runtime_versions(f), PAUSE_VERSIONS[cfg.kubernetes.minor])
        return runtime[:-1], runtime[-1]
    steps: list[Step] = []
    restart: list[str] = []
    dropin = file_step(f, ph, WriteFile(CRIO_DROPIN_PATH, crio_dropin(cfg).encode(), 0o644),
                       f"{cfg.kubernetes.cgroup_driver} cgroups and the pause image kubeadm expects")
    steps.append(dropin)
    if isinstance(dropin, Change) and restart_allowed:
        restart.append("the CRI-O drop-in")
    for step in registry_steps(cfg, f, ph):
        steps.append(step)
        # a changed registries drop-in (not a CA file) is read by CRI-O at start only
        if (isinstance(step, Change) and step.key is not None and step.key.kind == "file"
                and step.key.name.endswith(".conf") and restart_allowed):
            restart.append("the registries drop-in")
    unit = unit_step(f, ph, "crio.service", why="the kubelet talks to CRI-O",
                     restart_because=restart, wait="[ -S /var/run/crio/crio.sock ]")
    return steps, unit


def _package_steps(cfg: ClusterConfig, f: HostFacts, fam: OsFamily, ph: str,
                   missing: list[str]) -> list[Step]:
    """Install the missing packages held at the configured version, or say why not."""
    h = f.host
    held = held_packages(cfg)
    if missing:
        # the repository serves one minor; a configured patch is pinned (kubeadm refuses
        # a kubelet newer than the control plane it was told to build)
        pinned = (package_pins(cfg, fam, missing) if cfg.kubernetes.version != cfg.kubernetes.minor
                  else missing)
        cmd, how = fam.install_held_command(pinned, held)
        # recorded like host prep's packages, so that reset and node removal take them away
        cmd = fam.record_install(cmd, PACKAGES_RECORD)
        what = ("with the matching CRI-O" if cfg.kubernetes.runtime == "cri-o"
                else "and the CNI plugins (kubernetes-cni) for containerd")
        return [Change(h, ph, "packages", f"install {', '.join(missing)}",
                       f"Kubernetes {cfg.kubernetes.version} {what}; {how}",
                       (Run(cmd, f"install {' '.join(pinned)}"),))]
    steps: list[Step] = [_installed_versions(cfg, f, ph)]
    unheld = [p for p in held if p not in kube_facts(f).held]
    hold = fam.hold_command(unheld)
    # None: the family's repository keeps them (dnf's exclude=), there is nothing to hold
    if hold is not None:
        if unheld:
            steps.append(Change(h, ph, "holds", f"hold {', '.join(unheld)}",
                                "keep `apt upgrade` from changing the cluster's version", (Run(hold),)))
        else:
            steps.append(NoChange(h, ph, "holds", "Kubernetes packages are held"))
    return steps


def _installed_versions(cfg: ClusterConfig, f: HostFacts, ph: str) -> NoChange:
    """The installed packages match cluster.yaml's version, or a warning saying how not."""
    h = f.host
    version = cfg.kubernetes.version
    wrong = [f"{p} {f.packages[p].version}" for p in versioned_packages(cfg)
             if _minor(f.packages[p].version) != cfg.kubernetes.minor]
    patch = [f"{p} {f.packages[p].version}" for p in versioned_packages(cfg)
             if p != "cri-o" and version.count(".") == 2
             and not (f.packages[p].version or "").startswith(f"{version}-")]
    if wrong:
        return NoChange(h, ph, "packages",
                        f"installed {', '.join(wrong)} but cluster.yaml wants {cfg.kubernetes.minor}: "
                        "homekube does not upgrade Kubernetes in place (yet)", warning=True)
    if patch:
        return NoChange(h, ph, "packages",
                        f"installed {', '.join(patch)} but cluster.yaml pins {version}: homekube "
                        "does not change patch versions in place (yet)", warning=True)
    return NoChange(h, ph, "packages",
                    f"installed: {', '.join(k8s_packages(cfg))} ({cfg.kubernetes.minor})")


def _kubelet_enabled(f: HostFacts, ph: str, missing: list[str]) -> Step:
    if missing or not f.unit("kubelet.service").is_enabled:
        return Change(f.host, ph, "unit kubelet.service", "enable kubelet",
                      "kubeadm starts it; enabled, it comes back after a reboot",
                      (Run("systemctl enable kubelet"),))
    return NoChange(f.host, ph, "unit kubelet.service", "kubelet is enabled")


# ---------------------------------------------------------------------------------------------
# phase 2: kubeadm


@dataclass(frozen=True)
class _Secrets:
    token: str
    certificate_key: str | None


def kubernetes_ca_spec() -> CertSpec:
    """kubeadm's cluster CA: CN ``kubernetes``, ten years (facts.md §6.1)."""
    return CertSpec(name="kubernetes/ca", common_name="kubernetes", is_ca=True,
                    validity=CA_VALIDITY)


def cgroup_v1_warnings(ctx: Context, phase: str) -> list[Step]:
    """One warning per cgroup v1 node that runs only because of `kubernetes.allowCgroupV1`."""
    if not ctx.config.kubernetes.allow_cgroup_v1:
        return []
    return [NoChange(h.name, phase, "cgroup v1",
                     "cgroup v1 host, allowed by kubernetes.allowCgroupV1: kubelet runs with "
                     "failCgroupV1: false and kubeadm ignores its SystemVerification check "
                     "(cgroup v1 is deprecated; boot with cgroup v2 when you can)", warning=True)
            for h in ctx.hosts() if is_node(h) and ctx.facts[h.name].cgroup == 1]


INIT, CLUSTER_CONFIG, API_SERVERS, KUBECONFIGS, TOKEN, CP_JOIN, WORKER_JOIN, API_RESTARTS = declare(
    "kubeadm", parallel("init"), parallel("cluster config"), one_at_a_time("api servers"),
    parallel("kubeconfigs"), parallel("token"), one_at_a_time("control-plane join"),
    parallel("worker join"), one_at_a_time("api server restarts"))


class KubeadmPhase:
    name = "kubeadm"
    title = "kubeadm (first control plane, then joining nodes)"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return _probes(config, host)

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        if not cfg.kubernetes.enabled:
            return _off(ctx, self.name)
        p = primary(ctx)
        if p is None:
            return [NoChange(h.name, self.name, "kubeadm", "no control-plane host in cluster.yaml",
                             warning=True) for h in ctx.hosts()]
        ph = self.name
        pf = ctx.facts[p.host.name]
        others = [h for h in ctx.hosts() if is_node(h) and h.name != p.host.name]
        joining = [h for h in others if ctx.facts[h.name].file(KUBELET_CONF) is None]
        steps: list[Step] = cgroup_v1_warnings(ctx, ph) + self._joined(p, others, joining)
        stopped = self._stopped(ctx, p, joining)
        if stopped:
            return steps + stopped

        cp_joins = [h for h in joining if h.has("control-plane")]
        wk_joins = [h for h in joining if not h.has("control-plane")]
        sec = _Secrets(new_token(), new_certificate_key() if cp_joins else None)

        # the CA whose hash pins discovery
        if p.state == "fresh":
            ca_pem, ca_step = self._cluster_ca(ctx, p.host, pf)
            steps += [ca_step, self._init(ctx, p.host, pf, sec)]
        else:
            crt = pf.file(CA_CRT)
            if crt is None or not crt.content:
                steps += [NoChange(h.name, ph, "join", f"{CA_CRT} cannot be read on {p.host.name}",
                                   warning=True) for h in joining]
                return steps
            ca_pem = crt.content
            steps.append(NoChange(p.host.name, ph, "kubeadm init",
                                  f"cluster initialised ({p.why})"))
            # endpoint, SANs and etcd members of the running cluster follow cluster.yaml
            # (before anyone joins: a joining control plane reads kubeadm-config); a running
            # API server restarts with new --etcd-servers only after the joins (cp_config)
            steps += control_plane_config_steps(
                ctx, p.host, _kubeadm_version(cfg, pf),
                Stages(CLUSTER_CONFIG, API_SERVERS, KUBECONFIGS, API_RESTARTS), ph)
            if joining:
                steps += self._token_steps(ctx, p.host, pf, sec)
        ca_hash = ca_cert_hash(ca_pem)

        # control planes join one at a time, in cluster.yaml's order; workers all together
        steps += [self._join(ctx, h, sec, ca_hash, CP_JOIN.turn(i)) for i, h in enumerate(cp_joins)]
        steps += [self._join(ctx, h, sec, ca_hash, WORKER_JOIN) for h in wk_joins]
        return steps

    def _joined(self, p: Primary, others: list[HostSpec], joining: list[HostSpec]) -> list[Step]:
        """Nodes that have a kubelet.conf: members, or leftovers of an old cluster."""
        if p.state != "fresh":
            state, warn = "has joined (kubelet.conf present)", False
        else:
            state = (f"has {KUBELET_CONF} but no control plane is initialised: it belongs to "
                     "an old cluster (`kubeadm reset` it first)")
            warn = True
        return [NoChange(h.name, self.name, "join", f"{h.name} {state}", warning=warn)
                for h in others if h not in joining]

    def _stopped(self, ctx: Context, p: Primary, joining: list[HostSpec]) -> list[Step]:
        """Why nothing can be done (a control plane that is down, kubeadm of another minor);
        empty when the plan can go on."""
        ph, first = self.name, p.host.name
        if p.state == "down":
            return [NoChange(first, ph, "kubeadm init",
                             f"{p.why}; homekube will not run kubeadm init again. Check "
                             "`journalctl -u kubelet` and `crictl ps -a` there", warning=True),
                    *(NoChange(h.name, ph, "join", f"{h.name} waits for the API of {first}",
                               warning=True) for h in joining)]
        have = kube_facts(ctx.facts[first]).kubeadm
        minor = ctx.config.kubernetes.minor
        if p.state == "fresh" and have and _minor(have) != minor:
            return [NoChange(first, ph, "kubeadm init",
                             f"kubeadm {have} is installed but cluster.yaml wants {minor}: "
                             "not initialising a cluster of another minor", warning=True)]
        return []

    def _cluster_ca(self, ctx: Context, h: HostSpec, f: HostFacts) -> tuple[bytes, Step]:
        """The CA `kubeadm init` will use (its PEM) and the step that provides it."""
        have_crt, have_key = f.file(CA_CRT), f.file(CA_KEY)
        if have_crt is not None and have_crt.content and have_key is not None:
            return have_crt.content, NoChange(h.name, self.name, "cluster CA",
                                              f"{CA_CRT} and ca.key exist; kubeadm init uses them")
        if have_crt is not None:
            raise RefusedError(
                f"{CA_CRT} exists on {h.name} without its key and no cluster runs", host=h.name,
                hint="remove /etc/kubernetes/pki/ca.* there (or restore ca.key), then apply")
        key = generate_key(ctx.config.etcd.key_type)
        ca_pem = issue_ca(kubernetes_ca_spec(), key, ctx.now)
        return ca_pem, Change(
            h.name, self.name, "cluster CA", "create the Kubernetes cluster CA (CN kubernetes)",
            "kubeadm uses an existing CA; its hash pins discovery for the joining nodes in this "
            "same apply",
            (WriteFile(CA_CRT, ca_pem, 0o644), WriteFile(CA_KEY, key, 0o600, secret=True)),
            order=INIT)

    def _init(self, ctx: Context, h: HostSpec, f: HostFacts, sec: _Secrets) -> Change:
        cfg = ctx.config
        kv = _kubeadm_version(cfg, f)

        def render(token: str, key: str | None) -> str:
            text: str = _render("the kubeadm init config", lambda: kubeadm_init_config(
                cfg, h.name, kubeadm_version=kv, certificate_key=key))
            return with_bootstrap_token(text, token)

        content = render(sec.token, sec.certificate_key)
        shown = render(REDACTED_TOKEN,
                       REDACTED_CERTIFICATE_KEY if sec.certificate_key else None)
        upload = " --upload-certs" if sec.certificate_key else ""
        actions: list[Action] = [WriteFile(INIT_CONFIG, content.encode(), 0o600, secret=True)]
        why = "no control plane is initialised yet"
        if kv is None and cfg.kubernetes.version.count(".") == 1:
            # the plan was made before kubeadm was installed: pin the control plane to the
            # installed kubeadm's exact version instead of letting kubeadm look `stable-X.Y` up
            # (a label that reaches kubeadm makes it ask dl.k8s.io: offline, that fails)
            minor = cfg.kubernetes.minor
            actions.append(Run(
                "v=$(kubeadm version -o short) || exit 1\n"
                f'case "$v" in v{minor}.*) ;; *) echo "kubeadm reports $v, not {minor}.x" >&2; '
                "exit 1;; esac\n"
                f'sed -i "s/^kubernetesVersion: .*/kubernetesVersion: $v/" {INIT_CONFIG}\n'
                f'grep -qx "kubernetesVersion: $v" {INIT_CONFIG} || '
                f'{{ echo "kubernetesVersion could not be set in {INIT_CONFIG}" >&2; exit 1; }}',
                f"set kubernetesVersion to the installed kubeadm's exact version (v{minor}.z)"))
            why += "; kubernetesVersion becomes the installed kubeadm's exact version"
        actions.append(Run(f"kubeadm config validate --config {INIT_CONFIG}"))
        actions.append(Run(_kubeadm(
            "kubeadm init",
            f"kubeadm init --config {INIT_CONFIG}{upload} --skip-token-print "
            "--skip-certificate-key-print",
            f"{LOG_DIR}/kubeadm-init.log")))
        return Change(h.name, self.name, "kubeadm init",
                      f"kubeadm init --config {INIT_CONFIG}{upload}", why,
                      tuple(actions), diff=_secret_diff(INIT_CONFIG, shown), order=INIT)

    def _token_steps(self, ctx: Context, h: HostSpec, f: HostFacts, sec: _Secrets) -> list[Step]:
        cfg = ctx.config
        out: list[Step] = [Change(
            h.name, self.name, "bootstrap token", "create a bootstrap token valid for 15 minutes",
            "nodes join with it in a later stage",
            (WriteFile(TOKEN_CONFIG, token_config(cfg, sec.token).encode(), 0o600, secret=True),
             Run(f"kubeadm token create --config {TOKEN_CONFIG} >/dev/null; rc=$?; "
                 f"rm -f {TOKEN_CONFIG}; exit $rc",
                 f"kubeadm token create --config {TOKEN_CONFIG} "
                 "(output discarded: it is the token)")),
            diff=_secret_diff(TOKEN_CONFIG, token_config(cfg, REDACTED_TOKEN)), order=TOKEN)]
        if sec.certificate_key:
            kv = _kubeadm_version(cfg, f)
            if kv is None:
                raise RefusedError(
                    f"cannot upload control-plane certificates: kubeadm on {h.name} is "
                    f"{kube_facts(f).kubeadm or 'missing'}, "
                    f"cluster.yaml wants {cfg.kubernetes.minor}",
                    host=h.name)
            text = _render("the upload-certs config", lambda: kubeadm_init_config(
                cfg, h.name, kubeadm_version=kv, certificate_key=sec.certificate_key))
            shown = _render("the upload-certs config", lambda: kubeadm_init_config(
                cfg, h.name, kubeadm_version=kv, certificate_key=REDACTED_CERTIFICATE_KEY))
            out.append(Change(
                h.name, self.name, "upload-certs",
                "upload the control-plane certificates (encrypted, deleted by kubeadm after 2 h)",
                "a control plane joins in a later stage and downloads them with the certificate key",
                (WriteFile(UPLOAD_CERTS_CONFIG, text.encode(), 0o600, secret=True),
                 Run(_kubeadm("kubeadm init phase upload-certs",
                              f"kubeadm init phase upload-certs --upload-certs "
                              f"--config {UPLOAD_CERTS_CONFIG}",
                              f"{LOG_DIR}/kubeadm-upload-certs.log")
                     + f"\nrm -f {UPLOAD_CERTS_CONFIG}")),
                diff=_secret_diff(UPLOAD_CERTS_CONFIG, shown), order=TOKEN))
        return out

    def _join(self, ctx: Context, h: HostSpec, sec: _Secrets, ca_hash: str, order: Order) -> Change:
        cfg = ctx.config
        cp = h.has("control-plane")

        def render(token: str, key: str | None) -> str:
            text: str = _render("a kubeadm join config", lambda: kubeadm_join_config(
                cfg, h.name, control_plane=cp, token=token, ca_cert_hashes=[ca_hash],
                certificate_key=key if cp else None))
            return text

        content = render(sec.token, sec.certificate_key)
        shown = render(REDACTED_TOKEN, REDACTED_CERTIFICATE_KEY if sec.certificate_key else None)
        what = "control plane" if cp else "worker"
        return Change(
            h.name, self.name, "join", f"kubeadm join --config {JOIN_CONFIG} ({what})",
            f"{h.name} is not part of the cluster yet (no {KUBELET_CONF}); discovery pins the CA "
            f"{ca_hash[:19]}…",
            (WriteFile(JOIN_CONFIG, content.encode(), 0o600, secret=True),
             Run(_kubeadm("kubeadm join", f"kubeadm join --config {JOIN_CONFIG}",
                          f"{LOG_DIR}/kubeadm-join.log") + f"\nrm -f {JOIN_CONFIG}")),
            diff=_secret_diff(JOIN_CONFIG, shown), order=order)


# ---------------------------------------------------------------------------------------------
# phase 3: Calico


CALICO_FILE = f"{CLUSTER_DIR}/calico-installation.yaml"
FLANNEL_FILE = f"{CLUSTER_DIR}/flannel.yaml"
HEADLAMP_FILE = f"{CLUSTER_DIR}/headlamp.yaml"


def cluster_file_paths(cfg: ClusterConfig) -> list[str]:
    """The paths of :func:`cluster_files`, without rendering them (probes need only these)."""
    out = [CALICO_FILE if cfg.network.cni == "calico" else FLANNEL_FILE]
    return out + ([HEADLAMP_FILE] if cfg.ui.kind != "none" else [])


#: the last renders of cluster_files, by config object (configs are frozen): the planners of
#: one run ask for the same files several times, and rendering them is most of a no-op's CPU
_RENDERED: dict[tuple[int, bool], tuple[ClusterConfig, list[tuple[str, bytes]]]] = {}


def cluster_files(cfg: ClusterConfig, *, kernel_has_ipip: bool = True) -> list[tuple[str, bytes]]:
    """The object files kubectl applies from the first control plane (path, content).

    The CNI's (Calico's Installation, or flannel's objects) first, then the UI's.
    """
    hit = _RENDERED.get((id(cfg), kernel_has_ipip))
    if hit is not None and hit[0] is cfg:
        return list(hit[1])
    out = _render_cluster_files(cfg, kernel_has_ipip=kernel_has_ipip)
    if len(_RENDERED) >= 8:
        _RENDERED.clear()
    _RENDERED[(id(cfg), kernel_has_ipip)] = (cfg, out)
    assert [p for p, _ in out] == cluster_file_paths(cfg)
    return list(out)


def _render_cluster_files(cfg: ClusterConfig, *, kernel_has_ipip: bool) -> list[tuple[str, bytes]]:
    header = _HEADER.format(name=cfg.name)
    if cfg.network.cni == "calico":
        calico = calico_installation(cfg, kernel_has_ipip=kernel_has_ipip)
        out = [(CALICO_FILE, (header + dump_all(calico)).encode())]
    else:
        out = [(FLANNEL_FILE, (header + dump_all(flannel_objects(cfg))).encode())]
    if cfg.ui.kind != "none":
        ui = headlamp_objects(cfg)
        out.append((HEADLAMP_FILE, (header + dump_all(ui)).encode()))
    return out


def _cluster_file(cfg: ClusterConfig, path: str, *, kernel_has_ipip: bool = True) -> bytes:
    return dict(cluster_files(cfg, kernel_has_ipip=kernel_has_ipip))[path]


def _download_calico(cfg: ClusterConfig) -> Run:
    arts, sums = calico_artifacts(cfg)
    lines = [f"install -d -m 0755 {CALICO_DIR}", TEMP_DIR]
    for a in arts:
        lines += fetch_verified(DownloadArtifact(a.url, None if a.sha256 else sums, a.filename,
                                                 a.sha256))
    for a in arts:
        lines.append(f'install -m 0644 "$d/{a.filename}" {CALICO_DIR}/{a.filename}')
    how = ("checked against the mirror's SHA256SUMS" if sums
           else "from the immutable release tag over TLS")
    return Run("\n".join(lines), f"download Calico {CALICO_VERSION} manifests ({how})")


def _wait_calico(seconds: int = 600) -> Run:
    avail = "{.status.conditions[?(@.type==\"Available\")].status}"
    why = ('{range .items[*]}{.metadata.name}{": "}{range .status.conditions[?(@.status=="True")]}'
           '{.type}{" "}{.reason}{" "}{.message}{"; "}{end}{"\\n"}{end}')
    available = hk_sh(f"[ \"$({KUBECTL} get tigerastatus calico -o jsonpath='{avail}' 2>/dev/null)\" = True ]")
    cmd = poll_until(available, seconds=seconds, every=5,
                     failure=f"Calico is not Available after {seconds}s. Not ready:",
                     diagnose=[hk_sh(f"{KUBECTL} get tigerastatus >&2 || "
                                     "echo 'no TigeraStatus yet: is the operator running?' >&2",
                                     compound=True),
                               hk_sh(f"{KUBECTL} get tigerastatus -o jsonpath='{why}' >&2"),
                               hk_sh(f"{KUBECTL} -n calico-system get pods -o wide >&2")]).text
    return Run(cmd, "wait until TigeraStatus calico is Available (up to 10 min)")


def _other_cni(ctx: Context, phase: str, resource: str) -> list[Step]:
    """One line saying this CNI phase has nothing to do: cluster.yaml chose the other CNI."""
    cps = [h for h in ctx.hosts() if h.has("control-plane")]
    return [NoChange(cps[0].name, phase, resource, f"network.cni is {ctx.config.network.cni}")
            ] if cps else []


def _api_target(ctx: Context, phase: str, resource: str) -> str | list[Step]:
    """The host that applies objects through the API, or the steps saying why there is none."""
    if not ctx.config.kubernetes.enabled:
        return _off(ctx, phase)
    p = primary(ctx)
    if p is None:
        return []
    if p.state == "down":
        return [NoChange(p.host.name, phase, resource, f"waits for the API: {p.why}", warning=True)]
    return p.host.name


class CalicoPhase:
    name = "calico"
    title = "Calico (CRDs, Tigera operator, Installation)"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return _probes(config, host)

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        if cfg.kubernetes.enabled and cfg.network.cni != "calico":
            return _other_cni(ctx, self.name, "calico")
        target = _api_target(ctx, self.name, "calico")
        if isinstance(target, list):
            return target
        h, ph = target, self.name
        f = ctx.facts[h]
        kf = kube_facts(f)
        steps: list[Step] = []
        arts, _ = calico_artifacts(cfg)
        download = any(f.file(f"{CALICO_DIR}/{a.filename}") is None for a in arts)
        if download:
            steps.append(Change(h, ph, "calico manifests",
                                f"download Calico {CALICO_VERSION} manifests to {CALICO_DIR}",
                                "CRDs and operator come from the release, pinned by version",
                                (_download_calico(cfg),)))
        else:
            steps.append(NoChange(h, ph, "calico manifests",
                                  f"Calico {CALICO_VERSION} manifests present"))
        crds = f"{CALICO_DIR}/{CALICO_MANIFESTS[0]}"
        operator = f"{CALICO_DIR}/{CALICO_MANIFESTS[1]}"
        changed = download
        if download or not kf.crd:
            changed = True
            steps.append(Change(
                h, ph, "calico CRDs", "apply the Calico and operator CRDs (server-side)",
                "the CRDs come first since Calico 3.30; server-side apply has no "
                "annotation size limit",
                (Run(f"{SSA} --force-conflicts -f {crds} >/dev/null"),
                 Run(f"{KUBECTL} wait --for=condition=Established --timeout=120s "
                     f"-f {crds} >/dev/null",
                     "wait until every CRD is Established"))))
        else:
            steps.append(NoChange(h, ph, "calico CRDs", "Calico CRDs exist"))
        want_image = image(cfg, TIGERA_OPERATOR_IMAGE)
        stale = kf.operator_image is not None and not kf.operator_image.startswith(want_image + ":")
        if download or not kf.operator or stale:
            changed = True
            apply = f"{SSA} --force-conflicts -f {operator} >/dev/null"
            why = "the operator installs and upgrades Calico from the Installation"
            if cfg.artifacts.image_repository:
                # the manifest names quay.io; the Installation's `registry` covers only the
                # images the operator starts, not the operator itself (Calico's alternate-
                # registry guide edits the manifest the same way)
                repo = cfg.artifacts.image_repository
                apply = (f"sed -E 's#(image: *\"?)quay\\.io/#\\1{repo}/#' {operator} | "
                         f"{SSA} --force-conflicts -f - >/dev/null")
                why += f"; its own image from {repo}"
            if stale:
                why = f"the operator runs {kf.operator_image}, cluster.yaml wants {want_image}"
            steps.append(Change(
                h, ph, "tigera operator", "apply the Tigera operator (server-side)", why,
                (Run(apply),
                 Run(f"{KUBECTL} -n tigera-operator rollout status deployment/tigera-operator "
                     "--timeout=300s", "wait for the operator's rollout"))))
        else:
            steps.append(NoChange(h, ph, "tigera operator", "the Tigera operator is deployed"))

        path = CALICO_FILE
        content = _cluster_file(cfg, path, kernel_has_ipip=kf.ipip)
        s = file_step(f, ph, WriteFile(path, content, 0o644),
                      "pools equal to the pod networks, natOutgoing Enabled, node addresses "
                      "from the kubelet's node-ip", resource="calico installation")
        if isinstance(s, Change) or not kf.installation:
            changed = True
            why = s.why if isinstance(s, Change) else "the Installation is missing in the cluster"
            if not kf.ipip and cfg.network.encapsulation.startswith("IPIP"):
                why += "; this kernel has no IP-in-IP, so the IPv4 pool uses VXLAN"
            steps.append(Change(
                h, ph, "calico installation",
                s.summary if isinstance(s, Change) else f"apply {path}", why,
                (WriteFile(path, content, 0o644), Run(f"{SSA} -f {path}")),
                diff=s.diff if isinstance(s, Change) else None))
        else:
            steps.append(s)
        if changed or kf.calico_available is not True:
            steps.append(Change(h, ph, "calico ready", "wait until Calico is Available",
                                "nodes stay NotReady until the pod network runs",
                                (_wait_calico(),)))
        else:
            steps.append(NoChange(h, ph, "calico ready", "TigeraStatus calico is Available"))
        return steps


# ---------------------------------------------------------------------------------------------
# phase 3b: flannel


def _wait_flannel(seconds: int = 300) -> Run:
    ns, ds = FLANNEL_NAMESPACE, FLANNEL_DAEMONSET
    return Run(
        f"{KUBECTL} -n {ns} rollout status daemonset/{ds} --timeout={seconds}s || {{ "
        f"echo 'flannel is not ready on every node after {seconds}s:' >&2; "
        f"{KUBECTL} -n {ns} get pods -o wide >&2; "
        f"{KUBECTL} get nodes -o custom-columns=NODE:.metadata.name,PODCIDRS:.spec.podCIDRs >&2; "
        "exit 1; }",
        f"wait for the {ds} rollout on every node (up to {seconds // 60} min)")


class FlannelPhase:
    """Flannel from homekube's own objects, applied like Calico's Installation."""

    name = "flannel"
    title = "flannel (pod network, VXLAN)"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return _probes(config, host)

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        if cfg.kubernetes.enabled and cfg.network.cni != "flannel":
            return _other_cni(ctx, self.name, "flannel")
        target = _api_target(ctx, self.name, "flannel")
        if isinstance(target, list):
            return target
        h, ph = target, self.name
        f = ctx.facts[h]
        kf = kube_facts(f)
        path = FLANNEL_FILE
        content = _cluster_file(cfg, path)
        s = file_step(f, ph, WriteFile(path, content, 0o644),
                      "VXLAN between the nodes; each node's subnet is its podCIDR from "
                      "kube-controller-manager", resource="flannel")
        if isinstance(s, Change) or kf.flannel is None:
            why = s.why if isinstance(s, Change) else "the kube-flannel-ds DaemonSet is missing"
            return [Change(h, ph, "flannel", s.summary if isinstance(s, Change) else f"apply {path}",
                           why,
                           (WriteFile(path, content, 0o644), Run(f"{SSA} -f {path}"),
                            _wait_flannel()),
                           diff=s.diff if isinstance(s, Change) else None)]
        ready, desired = kf.flannel
        if ready < desired or desired == 0:
            return [s, Change(h, ph, "flannel ready", "wait until flannel runs on every node",
                              f"{ready} of {desired} flannel pods are ready; nodes stay NotReady "
                              "without the pod network", (_wait_flannel(),))]
        return [s, NoChange(h, ph, "flannel ready", f"flannel runs on {ready} of {desired} node(s)")]


# ---------------------------------------------------------------------------------------------
# phase 4: the web UI


class UiPhase:
    name = "ui"
    title = "Web UI (Headlamp)"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return _probes(config, host)

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        target = _api_target(ctx, self.name, "headlamp")
        if isinstance(target, list):
            return target
        h, ph = target, self.name
        f = ctx.facts[h]
        kf = kube_facts(f)
        if cfg.ui.kind == "none":
            if kf.headlamp or {"headlamp-view", "headlamp-cluster-admin"} & kf.bindings:
                return [Change(h, ph, "headlamp", "remove Headlamp", "ui.kind is none",
                               (Run(f"{KUBECTL} delete namespace {HEADLAMP_NAMESPACE} "
                                    "--ignore-not-found && "
                                    f"{KUBECTL} delete clusterrolebinding headlamp-view "
                                    "headlamp-cluster-admin --ignore-not-found"),))]
            return [NoChange(h, ph, "headlamp", "ui.kind is none")]
        path = HEADLAMP_FILE
        content = _cluster_file(cfg, path)
        role = "cluster-admin" if cfg.ui.access == "admin" else "view"
        other = "headlamp-view" if role == "cluster-admin" else "headlamp-cluster-admin"
        token_only = cfg.ui.kind == "token"
        what = ("the UI's service account" if token_only else "Headlamp")
        s = file_step(f, ph, WriteFile(path, content, 0o644),
                      f"{what} bound to `{role}`; no token Secret (tokens come from "
                      "`homekube ui`, short-lived)", resource="headlamp")
        stale = other in kf.bindings
        # token: the account and binding are what must exist; an in-cluster Headlamp left from
        # `ui.kind: headlamp` goes away
        present = f"headlamp-{role}" in kf.bindings if token_only else kf.headlamp
        leftover = token_only and kf.headlamp
        if isinstance(s, Change) or not present or stale or leftover:
            acts: list[Action] = [WriteFile(path, content, 0o644), Run(f"{SSA} -f {path}")]
            if stale or isinstance(s, Change):
                # roleRef is immutable, so a changed ui.access is a new binding: drop the old one
                acts.append(Run(f"{KUBECTL} delete clusterrolebinding {other} --ignore-not-found",
                                f"remove the binding of the other access level ({other})"))
            if leftover:
                acts.append(Run(f"{KUBECTL} -n {HEADLAMP_NAMESPACE} delete deployment/headlamp "
                                "service/headlamp --ignore-not-found",
                                "remove the in-cluster Headlamp (ui.kind is token)"))
            if not token_only:
                acts.append(Run(
                    f"{KUBECTL} -n {HEADLAMP_NAMESPACE} rollout status deployment/headlamp "
                    "--timeout=300s || { "
                    f"echo 'Headlamp is not ready after 300s:' >&2; "
                    f"{KUBECTL} -n {HEADLAMP_NAMESPACE} get pods -o wide >&2; exit 1; }}",
                    "wait for Headlamp's rollout (up to 5 min)"))
            why = s.why if isinstance(s, Change) else f"{what} is missing in the cluster"
            if leftover and not isinstance(s, Change):
                why = "ui.kind is token: the in-cluster Headlamp is no longer wanted"
            summary = s.summary if isinstance(s, Change) else f"apply {path}"
            return [Change(h, ph, "headlamp", summary, why, tuple(acts),
                           diff=s.diff if isinstance(s, Change) else None)]
        return [s]


def kubernetes_phases() -> list[Phase]:
    return [KubernetesPackagesPhase(), EndpointPhase(), KubeadmPhase(), CalicoPhase(),
            FlannelPhase(), UiPhase()]


ALL_PHASE_NAMES = tuple(p.name for p in kubernetes_phases())


# ---------------------------------------------------------------------------------------------
# `homekube render`


def rendered_kubernetes_files(cfg: ClusterConfig) -> list[tuple[str, str, bytes, bool]]:
    """(host, path, content, secret) of every Kubernetes-layer file, without any host.

    Secrets do not exist yet when rendering, so the kubeadm files carry the placeholders
    (:data:`REDACTED_TOKEN`, …); they are therefore not secret and are written in full.
    """
    from homekube.render.kubernetes import REDACTED_CA_CERT_HASH

    if not cfg.kubernetes.enabled:
        return []
    out: list[tuple[str, str, bytes, bool]] = []
    cps = cfg.control_planes
    first = cps[0].name if cps else None
    key = REDACTED_CERTIFICATE_KEY if len(cps) > 1 else None
    for h in cfg.hosts:
        if not is_node(h):
            continue
        for fam in FAMILIES.values():
            for rf in repo_files(cfg, fam):
                out.append((h.name, rf.path, rf.content.encode(), False))
        if cfg.kubernetes.runtime == "cri-o":
            out.append((h.name, CRIO_DROPIN_PATH, crio_dropin(cfg).encode(), False))
        pause = PAUSE_VERSIONS[cfg.kubernetes.minor]
        out += [(h.name, path, content, False) for path, content in runtime_files(cfg, pause)]
        out += [(h.name, path, content.encode(), False) for path, content in registry_files(cfg)]
        if h.name == first:
            init = with_bootstrap_token(kubeadm_init_config(cfg, h.name, certificate_key=key),
                                        REDACTED_TOKEN)
            out.append((h.name, INIT_CONFIG, init.encode(), False))
            out += [(h.name, path, content, False) for path, content in cluster_files(cfg)]
        else:
            cp = h.has("control-plane")
            join = kubeadm_join_config(cfg, h.name, control_plane=cp, token=REDACTED_TOKEN,
                                       ca_cert_hashes=[REDACTED_CA_CERT_HASH],
                                       certificate_key=key if cp else None)
            out.append((h.name, JOIN_CONFIG, join.encode(), False))
    return out
