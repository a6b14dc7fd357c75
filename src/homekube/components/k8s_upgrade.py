"""Kubernetes minor upgrades (1.X → 1.X+1) of an initialised cluster, as one pure phase.

Executed in the lab (tests/rig/test_k8s_upgrade.py): 1.35.4 → 1.36.3 with containerd, one
control plane and two workers, a Deployment behind a PodDisruptionBudget serving throughout
(0 failed requests). Validated only (unit tests, not a cluster): CRI-O's packages and drop-in,
other control planes' `kubeadm upgrade node`, etcd moving first when the new minor wants
another etcd (1.36 → 1.37).

The phase runs after the etcd phases and before k8s-packages. When cluster.yaml names the next
minor, etcd has already moved to the version matched to it (``ClusterConfig.etcd_version``, one
member at a time, gated by :func:`homekube.components.etcd.check_upgrade_gates`). Then, in stages:

    repositories    every node: repositories switched to the new minor (pkgs.k8s.io
                    ``core:/stable:/v1.X`` and ``isv:cri-o:stable:v1.X``, or the mirror), keys
                    refreshed
    upgrade apply   first control plane: new kubeadm, ``kubeadm upgrade plan``,
                    ``kubeadm upgrade apply``
    control planes  the other control planes, one at a time: new kubeadm, ``kubeadm upgrade node``
    kubelets        node by node (the first control plane first, then the other control
                    planes, then workers), each through three steps: ``kubectl drain`` (on the
                    first control plane) → new kubelet, kubectl, CRI-O of the same minor
                    (workers: kubeadm + ``kubeadm upgrade node`` too), CRI-O drop-in, restart →
                    wait Ready + ``kubectl uncordon`` (on the first control plane)

kubeadm upgrades one minor at a time and never downgrades: anything else is refused while
planning, so nothing is touched. So is starting an upgrade while a node is not Ready, an
etcd member does not answer, or clients still use an API the new minor removes (kube-apiserver's
``apiserver_requested_deprecated_apis`` gauge, which counts requests since it started; read only
while the running API server is not the wanted minor) (an upgrade already under way goes on). A host already on the
wanted minor gets nothing (idempotent).
No secret is involved: the commands carry no token or key.
"""

from __future__ import annotations

import re

from homekube.components.base import Context
from homekube.components.kubeadm_base import KUBECTL, LOG_DIR
from homekube.components.kubeadm_base import kubeadm_script as _kubeadm
from homekube.components.kubernetes import (
    LAYER_OFF,
    _minor,
    installed_minor,
    is_node,
    kube_facts,
    kubernetes_probes,
    package_pins,
    primary,
    upgrading_from,
)
from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import RefusedError
from homekube.etcd.shell import etcd_facts
from homekube.facts.base import shell_quote
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.osfamily import OsFamily, family_of, fetch_keyring_command
from homekube.plan.model import Action, Change, NoChange, Run, Step, WriteFile
from homekube.plan.order import Order, declare, one_at_a_time, parallel
from homekube.render.kubernetes import (
    CRIO_DROPIN_PATH,
    PAUSE_VERSIONS,
    RepoFile,
    crio_dropin,
    ignored_preflight_checks,
    repo_files,
)
from homekube.render.runtime import CONTAINERD_CONFIG, containerd_config

__all__ = ["PHASE", "KubernetesUpgradePhase", "check_minor_step", "package_pins"]  # pins: re-export

PHASE = "k8s-upgrade"
DRAIN_TIMEOUT = "600s"

REPOS, UPGRADE_APPLY, CONTROL_PLANES, KUBELETS = declare(
    PHASE, parallel("repositories"), parallel("upgrade apply"), one_at_a_time("control planes"),
    one_at_a_time("kubelets", "drain", "kubelet", "uncordon"))


def _tuple(minor: str) -> tuple[int, int]:
    a, b = minor.split(".")[:2]
    return int(a), int(b)


def check_minor_step(host: str, have: str, want: str) -> str | None:
    """Why Kubernetes `have` → `want` (minors) is not a kubeadm upgrade, or None when it is."""
    h, w = _tuple(have), _tuple(want)
    if w < h:
        return (f"{host}: Kubernetes {have} → {want} is a downgrade, which kubeadm does not "
                f"support")
    if w[0] != h[0] or w[1] > h[1] + 1:
        nxt = f"{h[0]}.{h[1] + 1}"
        return (f"{host}: Kubernetes {have} → {want} skips a minor: kubeadm upgrades one minor "
                f"at a time (next: {nxt})")
    return None


def _ignoring(cfg: ClusterConfig) -> str:
    """The preflight checks kubeadm init/join were told to ignore, for the upgrade commands
    too: `kubeadm upgrade plan/apply/node` run the same SystemVerification (cgroup v1)."""
    checks = ignored_preflight_checks(cfg)
    return f" --ignore-preflight-errors={shell_quote(','.join(checks))}" if checks else ""


def _install(cfg: ClusterConfig, fam: OsFamily, packages: list[str]) -> Run:
    """Install the new minor's `packages`, lifting and restoring whatever holds them."""
    pins = package_pins(cfg, fam, packages)
    cmd, how = fam.upgrade_held_command(packages, pins)
    return Run(cmd, f"install {' '.join(pins)} ({how})")


def _repo_base(rf: RepoFile) -> str:
    return re.sub(r"(deb/Release\.key|rpm/repodata/repomd\.xml\.key)$", "", rf.key_url)


def _repos(cfg: ClusterConfig, h: str, fam: OsFamily, have: str) -> Change:
    want = cfg.kubernetes.minor
    repos = repo_files(cfg, fam)
    acts: list[Action] = []
    for rf in repos:
        if rf.keyring:
            acts.append(Run(fetch_keyring_command(rf), f"refresh {rf.keyring} from {rf.key_url}"))
        acts.append(WriteFile(rf.path, rf.content.encode(), rf.mode))
    return Change(
        h, PHASE, "repositories", f"switch the Kubernetes and CRI-O repositories to v{want}",
        f"one repository per minor: {have} → {want} needs "
        + " and ".join(_repo_base(rf) for rf in repos),
        tuple(acts), order=REPOS)


def _upgrade_apply(cfg: ClusterConfig, h: str, fam: OsFamily, have: str) -> Change:
    minor, version = cfg.kubernetes.minor, cfg.kubernetes.version
    if version != minor:
        pick = f"v=v{version}"
        how = f"v{version} from cluster.yaml"
    else:
        pick = "v=$(kubeadm version -o short)"
        how = f"the installed kubeadm's v{minor}.z; cluster.yaml names only the minor"
    check = (f'case "$v" in v{minor}.*) ;; *) echo "kubeadm reports $v, not {minor}.x" >&2; '
             "exit 1;; esac")
    run = "\n".join([
        pick, check,
        _kubeadm("kubeadm upgrade plan", f'kubeadm upgrade plan "$v"{_ignoring(cfg)}',
                 f"{LOG_DIR}/kubeadm-upgrade-plan.log"),
        _kubeadm("kubeadm upgrade apply", f'kubeadm upgrade apply -y "$v"{_ignoring(cfg)}',
                 f"{LOG_DIR}/kubeadm-upgrade-apply.log"),
    ])
    return Change(
        h, PHASE, "kubeadm upgrade apply",
        f"install kubeadm {minor}, kubeadm upgrade plan, kubeadm upgrade apply -y ({how})",
        f"the first control plane upgrades the cluster {have} → {minor}: API server, controller "
        "manager, scheduler, kube-proxy, CoreDNS (etcd is external: upgraded by the etcd phase)",
        (_install(cfg, fam, ["kubeadm"]),
         Run(run, f'kubeadm upgrade plan "$v" && kubeadm upgrade apply -y "$v" ({how})')),
        order=UPGRADE_APPLY)


def _upgrade_node(cfg: ClusterConfig, h: str, fam: OsFamily, have: str, order: Order) -> Change:
    minor = cfg.kubernetes.minor
    return Change(
        h, PHASE, "kubeadm upgrade node", f"install kubeadm {minor}, kubeadm upgrade node",
        f"control planes follow the first one {have} → {minor}, one at a time",
        (_install(cfg, fam, ["kubeadm"]),
         Run(_kubeadm("kubeadm upgrade node", f"kubeadm upgrade node{_ignoring(cfg)}",
                      f"{LOG_DIR}/kubeadm-upgrade-node.log"), "kubeadm upgrade node")),
        order=order)


def _kubelet(cfg: ClusterConfig, h: HostSpec, fam: OsFamily, have: str, order: Order) -> Change:
    minor = cfg.kubernetes.minor
    acts: list[Action] = []
    crio = cfg.kubernetes.runtime == "cri-o"
    pkgs = ["cri-o", "kubectl", "kubelet"] if crio else ["kubectl", "kubelet"]
    if not h.has("control-plane"):
        # a worker's kubeadm moves here; `upgrade node` rewrites its kubelet configuration
        acts += [_install(cfg, fam, ["kubeadm"]),
                 Run(_kubeadm("kubeadm upgrade node", f"kubeadm upgrade node{_ignoring(cfg)}",
                              f"{LOG_DIR}/kubeadm-upgrade-node.log"), "kubeadm upgrade node")]
    acts.append(_install(cfg, fam, pkgs))
    if crio:
        acts += [
            WriteFile(CRIO_DROPIN_PATH, crio_dropin(cfg).encode(), 0o644),
            Run("systemctl daemon-reload && systemctl restart crio kubelet",
                "systemctl daemon-reload && systemctl restart crio kubelet"),
        ]
        return Change(
            h.name, PHASE, "kubelet", f"install kubelet, kubectl and cri-o {minor}, restart crio "
            "and kubelet", f"{h.name} is drained; its kubelet and CRI-O move {have} → {minor} "
            "(CRI-O minor = Kubernetes minor; the drop-in carries this minor's pause image)",
            tuple(acts), order=order)
    # containerd is not tied to a Kubernetes minor (cluster.yaml pins its version), but its
    # pinned sandbox image is kubeadm's pause image, which some minors change: then the
    # config moves here, with the kubelet (running containers outlive a containerd restart)
    old_pause, new_pause = PAUSE_VERSIONS.get(have), PAUSE_VERSIONS.get(minor)
    pause_moves = new_pause is not None and old_pause != new_pause
    if pause_moves and new_pause is not None:
        acts += [
            WriteFile(CONTAINERD_CONFIG, containerd_config(cfg, new_pause).encode(), 0o644),
            Run("systemctl restart containerd && for i in $(seq 60); do "
                "[ -S /run/containerd/containerd.sock ] && break; sleep 1; done && "
                "[ -S /run/containerd/containerd.sock ]",
                f"restart containerd (sandbox image pause {old_pause} → {new_pause})"),
        ]
    acts.append(Run("systemctl daemon-reload && systemctl restart kubelet",
                    "systemctl daemon-reload && systemctl restart kubelet"))
    pause = f", pin pause {new_pause} in containerd's config" if pause_moves else ""
    return Change(
        h.name, PHASE, "kubelet", f"install kubelet and kubectl {minor}{pause}, restart kubelet",
        f"{h.name} is drained; its kubelet moves {have} → {minor}"
        + (f" and kubeadm {minor} expects the sandbox image pause {new_pause}" if pause_moves
           else ""),
        tuple(acts), order=order)


#: Until the API server answers /readyz (up to 3 min): a control plane's new kubelet may
#: restart its static pods, and an API server that is up but not ready yet refuses requests
#: (its RBAC cache is empty: "forbidden" for the admin, seen on the lab's real upgrade).
API_READY = (f"for i in $(seq 180); do {KUBECTL} get --raw=/readyz >/dev/null 2>&1 && break; "
             f"sleep 1; done; {KUBECTL} get --raw=/readyz >/dev/null")


def _drain(first: str, node: str, order: Order) -> Change:
    return Change(
        first, PHASE, f"drain {node}", f"kubectl drain {node}",
        f"move workloads off {node} before its kubelet is replaced",
        (Run(API_READY, "wait until the API server is ready (up to 3 min)"),
         # drain is idempotent: a second try covers an API server restarted under it
         Run(f"for try in 1 2 3; do {KUBECTL} drain {shell_quote(node)} --ignore-daemonsets "
             f"--delete-emptydir-data --timeout={DRAIN_TIMEOUT} && exit 0; sleep 5; {API_READY}; "
             "done; exit 1",
             f"kubectl drain {node} --ignore-daemonsets --delete-emptydir-data "
             f"--timeout={DRAIN_TIMEOUT} (up to 3 tries)")),
        order=order)


def _uncordon(first: str, node: str, order: Order) -> Change:
    return Change(
        first, PHASE, f"uncordon {node}", f"kubectl uncordon {node}",
        f"{node} runs the new kubelet: wait until it is Ready, then let workloads back",
        (Run(API_READY, "wait until the API server is ready (up to 3 min)"),
         Run(f"{KUBECTL} wait --for=condition=Ready node/{shell_quote(node)} --timeout=300s",
             f"wait until node {node} is Ready (up to 5 min)"),
         Run(f"{KUBECTL} uncordon {shell_quote(node)}")),
        order=order)


def _upgrading(ctx: Context, nodes: list[HostSpec]) -> dict[str, str]:
    """The minor each member to upgrade runs now, by host; refuses any step but one minor up."""
    want = ctx.config.kubernetes.minor
    have = {h.name: old for h in nodes if (old := upgrading_from(ctx, ctx.facts[h.name])) is not None}
    problems = [why for n, m in have.items() if (why := check_minor_step(n, m, want))]
    if problems:
        raise RefusedError(
            f"unsupported Kubernetes version change to {want}; nothing was changed:\n"
            + "\n".join(problems),
            hint="kubeadm upgrades one minor at a time and never downgrades: set "
                 "kubernetes.version to the next minor of what runs and apply once per minor")
    return have


def started(ctx: Context, first: str) -> bool:
    """The upgrade has begun: the first control plane's kubeadm package is the wanted minor
    (`kubeadm upgrade apply` comes right after it is installed)."""
    pkg = ctx.facts[first].packages.get("kubeadm")
    return pkg is not None and _minor(pkg.version) == ctx.config.kubernetes.minor


def preflight_problems(ctx: Context, first: str) -> list[str]:
    """What must be healthy before an upgrade starts: every node Ready (as the API on the first
    control plane reports it) and every initialised etcd member answering."""
    kf = kube_facts(ctx.facts[first])
    problems = [f"node {n} is not Ready (Ready={r}): drain or fix it, or remove it first"
                for n, r in sorted(kf.node_ready.items()) if r != "True"]
    want = _tuple(ctx.config.kubernetes.minor)
    problems += [
        f"clients requested {d.name}, which Kubernetes {d.removed_release} removes (kube-apiserver "
        "counts it in apiserver_requested_deprecated_apis since it last started): move those "
        "clients and manifests to a served version first"
        for d in kf.deprecated if _tuple(d.removed_release) <= want]
    for h in ctx.hosts():
        if not h.has("etcd"):
            continue
        ef = etcd_facts(ctx.facts[h.name])
        if ef.initialized and ef.status is None:
            problems.append(f"{h.name}: etcd does not answer (initialised member, no status)")
    return problems


def _preflight(ctx: Context, first: str) -> None:
    """Refuse to start an upgrade of an unhealthy cluster (an upgrade already under way goes on:
    its own steps wait for each node, and refusing then would strand it half done)."""
    if started(ctx, first):
        return
    problems = preflight_problems(ctx, first)
    if problems:
        want = ctx.config.kubernetes.minor
        raise RefusedError(
            f"the cluster is not healthy enough to upgrade to Kubernetes {want}; nothing was "
            "changed:\n" + "\n".join(problems),
            hint="`homekube status` shows nodes and etcd members; apply again once every node "
                 "is Ready and every etcd member answers")


def _families(ctx: Context, hosts: dict[str, str]) -> dict[str, OsFamily]:
    fams: dict[str, OsFamily] = {}
    for n in hosts:
        fam = family_of(ctx.facts[n].os)
        if fam is None:
            raise RefusedError(f"cannot upgrade {n}: unsupported OS {ctx.facts[n].os.pretty}", host=n)
        fams[n] = fam
    return fams


class KubernetesUpgradePhase:
    name = PHASE
    title = "Kubernetes minor upgrade (kubeadm upgrade, then kubelets node by node)"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        return kubernetes_probes(config, host)

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        ph, want = self.name, cfg.kubernetes.minor
        if not cfg.kubernetes.enabled:
            return [NoChange(h.name, ph, "kubernetes", LAYER_OFF) for h in ctx.hosts()]
        p = primary(ctx)
        if p is None or p.state == "fresh":
            return [NoChange(h.name, ph, "upgrade", "no cluster is initialised: nothing to upgrade")
                    for h in ctx.hosts() if is_node(h)]
        nodes = [h for h in ctx.hosts() if is_node(h)]
        have = _upgrading(ctx, nodes)
        if not have:
            return [NoChange(h.name, ph, "upgrade", self._same(ctx.facts[h.name], want))
                    for h in nodes]
        if p.state == "down":
            return [NoChange(p.host.name, ph, "upgrade",
                             f"the upgrade to {want} waits for the API: {p.why}", warning=True)]
        first = p.host.name
        _preflight(ctx, first)
        fams = _families(ctx, have)
        upgrading = [h for h in nodes if h.name in have]
        other_cps = [h for h in upgrading if h.has("control-plane") and h.name != first]
        # kubelets: the first control plane, then the other control planes, then workers
        kubelets = sorted(upgrading, key=lambda h: (h.name != first, not h.has("control-plane")))
        steps: list[Step] = [NoChange(h.name, ph, "upgrade", self._same(ctx.facts[h.name], want))
                             for h in nodes if h.name not in have]
        steps += [_repos(cfg, h.name, fams[h.name], have[h.name]) for h in upgrading]
        if first in have:
            steps.append(_upgrade_apply(cfg, first, fams[first], have[first]))
        steps += [_upgrade_node(cfg, h.name, fams[h.name], have[h.name], CONTROL_PLANES.turn(i))
                  for i, h in enumerate(other_cps)]
        for i, h in enumerate(kubelets):
            steps += [_drain(first, h.name, KUBELETS.turn(i, "drain")),
                      _kubelet(cfg, h, fams[h.name], have[h.name], KUBELETS.turn(i, "kubelet")),
                      _uncordon(first, h.name, KUBELETS.turn(i, "uncordon"))]
        return steps

    @staticmethod
    def _same(f: HostFacts, want: str) -> str:
        m = installed_minor(f)
        if m is None:
            return f"no Kubernetes packages yet: k8s-packages installs {want}"
        if m != want:
            return f"Kubernetes {m} installed but not a member yet: not upgraded here"
        return f"Kubernetes {m} installed, as cluster.yaml wants"
