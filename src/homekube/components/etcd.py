"""etcd as its own TLS-secured systemd service: PKI, install, config, membership (pure).

What etcd is (paths, requests, scripts, membership rules) lives in :mod:`homekube.etcd`;
this module turns it, with the facts, into the plan's Changes. The `etcd` phase runs these
stages in order (:data:`STAGES`; hosts in parallel within a stage, unless it goes one host
at a time):

    install            binaries, user, directories, config and unit files (no (re)start)
    bootstrap          a brand-new cluster: every member starts together (initial-cluster-state new)
    restart            one member at a time (config, certs or binary changed, or it was down),
                       each healthy again before the next
    grow               per new member, one at a time: `member add --learner` on a running
                       member, start it with initial-cluster-state existing and wait until it
                       serves, `member promote` once it has caught up
    promote leftovers  a learner left over from an interrupted growth
    shrink             per leaving member, one at a time: quorum-checked `member remove`, then
                       stop etcd on the removed host and set its data aside
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

from homekube.components.artifacts import etcd_tarball
from homekube.components.base import Context
from homekube.components.downloads import (
    STAMP_DIR,
    TEMP_DIR,
    fetch_verified,
    install_binaries,
    stamp_lines,
)
from homekube.components.reset import PACKAGES_RECORD
from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import RefusedError
from homekube.etcd import layout as lay
from homekube.etcd import membership as ms
from homekube.etcd import shell as sh
from homekube.etcd.api import EtcdMember
from homekube.etcd.shell import etcd_facts
from homekube.facts.base import Fact
from homekube.facts.host import HostFacts
from homekube.facts.system import Probes
from homekube.osfamily import family_of
from homekube.pki.issue import generate_key, issue_ca, issue_cert
from homekube.pki.spec import (
    CertSpec,
    PkiFile,
    etcd_ca_spec,
    etcd_member_specs,
    member_dirs,
    member_files,
    needs_issue,
)
from homekube.plan.model import Act, Action, Change, ChangeKey, NoChange, Run, Step, WriteFile
from homekube.plan.order import Order, declare, one_at_a_time, parallel
from homekube.plan.resources import file_step, unit_step
from homekube.render import etcd as r
from homekube.topology import Topology

#: what the tarball install recorded about the binary it put in TARBALL_BIN: "inode size
#: mtime version" (read by the etcd fact instead of starting the binary)
VERSION_STAMP = f"{STAMP_DIR}/etcd-binary"

STAGES = declare(
    "etcd", parallel("install"), parallel("bootstrap"), one_at_a_time("restart"),
    one_at_a_time("grow", "add", "start", "promote"), parallel("promote leftovers"),
    one_at_a_time("shrink", "remove", "stop"))
INSTALL_STAGE, BOOTSTRAP, RESTART, GROW, LEFTOVER_PROMOTE, SHRINK = STAGES

#: identity of the Change that installs or upgrades etcd's binaries on a host
INSTALL_KEY = ChangeKey("etcd", "binaries", Act.INSTALL)


def restart_key(causes: list[str] | tuple[str, ...]) -> ChangeKey:
    """Identity of a rolling restart of etcd.service for `causes` (config, unit, binary, certificates)."""
    return ChangeKey("unit", lay.UNIT, Act.RESTART, frozenset(causes))


def start_key(why: str) -> ChangeKey:
    """Identity of a start of etcd.service: `bootstrap`, `down` (was not running) or `join`."""
    return ChangeKey("unit", lay.UNIT, Act.START, frozenset({why}))


#: a member taken out: stop etcd and set its data aside
RETIRE_KEY = ChangeKey("unit", lay.UNIT, Act.STOP, frozenset({"removed"}))


def member_key(name: str, act: str) -> ChangeKey:
    """Identity of a membership change of `name`: act is `add` (as a learner), `promote`, `remove`.

    plan.model's Act has no member verbs yet: the act goes into `causes` with the closest Act.
    """
    base = {"add": Act.CREATE, "promote": Act.UPDATE, "remove": Act.STOP}[act]
    return ChangeKey("etcd-member", name, base, frozenset({act}))


def capability_fact() -> Fact[dict[str, bool]]:
    """Can this host lower OOM scores / raise priority? (containers often cannot)."""
    cmd = (
        "(echo -999 > /proc/self/oom_score_adj) 2>/dev/null && echo oom=yes || echo oom=no\n"
        # GNU nice runs the command even when it may not renice: the inner one then says 0
        "[ \"$(nice -n -5 nice 2>/dev/null)\" = -5 ] && echo nice=yes || echo nice=no"
    )
    return Fact("caps", cmd, lambda t: {k: v == "yes" for k, _, v in
                                         (ln.partition("=") for ln in t.splitlines()) if k})


# ---------------------------------------------------------------------------------------------
# PKI (pure; the CA comes from the operator's state dir)


def _specs(cfg: ClusterConfig, h: HostSpec) -> tuple[CertSpec, ...]:
    ipv4 = str(h.ipv4) if h.ipv4 else str(h.address)
    ipv6 = str(h.ipv6) if h.ipv6 else None
    return etcd_member_specs(h.name, ipv4, ipv6, cfg.etcd.extra_sans,
                             control_plane=True, validity=timedelta(days=365))


def _files(h: HostSpec) -> tuple[PkiFile, ...]:
    return member_files(control_plane=True)


def pki_probes(cfg: ClusterConfig, h: HostSpec) -> dict[str, bool]:
    return {pf.path: pf.kind == "key" for pf in _files(h)} | {d.path: False for d in member_dirs()}


@dataclass(frozen=True)
class CertDecision:
    spec: CertSpec
    issue: bool
    reason: str


def cert_decisions(ctx: Context, h: HostSpec, ca_cert: bytes) -> list[CertDecision]:
    """For each leaf cert of `h`: must it be (re)issued, and why."""
    f = ctx.facts[h.name]
    window = timedelta(days=ctx.config.etcd.renew_within_days)
    out = []
    by_spec = {pf.spec_name: pf for pf in _files(h)
               if pf.kind == "cert" and pf.path.startswith(lay.KUBEADM_PKI)}
    for spec in _specs(ctx.config, h):
        pf = by_spec[spec.name]
        st = f.file(pf.path)
        key_st = f.file(pf.path[:-4] + ".key")
        existing = st.content if st is not None else None
        if existing is not None and key_st is None:
            out.append(CertDecision(spec, True, "the private key is missing"))
            continue
        need, why = needs_issue(spec, existing, ca_cert, ctx.now, window)
        out.append(CertDecision(spec, need, why))
    return out


def certs_changing(ctx: Context, h: HostSpec) -> bool:
    """Will the etcd-pki phase write new certs for `h` (so etcd must restart)?"""
    if ctx.local.etcd_ca_cert is None:
        return True
    return any(d.issue for d in cert_decisions(ctx, h, ctx.local.etcd_ca_cert))


class EtcdPkiPhase:
    name = "etcd-pki"
    title = "etcd certificates"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        if not host.has("etcd"):
            return Probes()
        return Probes(files=pki_probes(config, host) | {lay.CA_KEY_ON_HOST: True}, packages={"passwd"})

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        hosts = [h for h in ctx.hosts() if h.has("etcd")]
        if not hosts:
            return []
        steps: list[Step] = []
        ca_cert, ca_key = ctx.local.etcd_ca_cert, ctx.local.etcd_ca_key
        if ca_cert is None or ca_key is None:
            # planning only: show what apply would do with a CA it creates first
            ca_key = generate_key(cfg.etcd.key_type)
            ca_cert = issue_ca(etcd_ca_spec(), ca_key, ctx.now)
            steps.append(NoChange(
                hosts[0].name, self.name, "etcd CA",
                f"no etcd CA yet in {cfg.state_dir}: apply creates it there first (the CA key "
                "never leaves this machine)", warning=True,
            ))
        for h in hosts:
            f = ctx.facts[h.name]
            steps += _pki_dirs(f, self.name)
            steps += _ca_steps(ctx, f, self.name, ca_cert, ca_key)
            steps += _leaf_steps(ctx, h, self.name, ca_cert, ca_key)
        return steps


def _pki_dirs(f: HostFacts, ph: str) -> list[Step]:
    """Directories first (the etcd copy is owned by the etcd user, created here)."""
    acts: list[Action] = []
    if not etcd_facts(f).user:
        acts.append(Run(sh.USERADD, "create the etcd system user"))
    for pd in member_dirs():
        st = f.file(pd.path)
        if st is None or st.kind != "dir" or st.mode != pd.mode or (st.owner, st.group) != (pd.owner, pd.group):
            acts.append(Run(f"install -d -m {pd.mode:04o} -o {pd.owner} -g {pd.group} {pd.path}"))
    if not acts:
        return []
    return [Change(f.host, ph, "pki directories", "create PKI directories and the etcd user",
                   "etcd runs as its own user and reads its own copies of the keys", tuple(acts))]


def _ca_steps(ctx: Context, f: HostFacts, ph: str, ca_cert: bytes, ca_key: bytes) -> list[Step]:
    steps = [file_step(f, ph, WriteFile(lay.CA_CERT, ca_cert, 0o644),
                       "clients and members trust the etcd CA", resource="cert etcd/ca")]
    if ctx.config.state.ca_key_on_hosts:
        steps.append(file_step(f, ph, WriteFile(lay.CA_KEY_ON_HOST, ca_key, 0o600, secret=True),
                               "state.caKeyOnHosts: kubeadm-style tools on the host may sign",
                               resource="key etcd/ca"))
    elif f.file(lay.CA_KEY_ON_HOST) is not None:
        k = lay.CA_KEY_ON_HOST
        steps.append(Change(f.host, ph, "key etcd/ca", f"remove {k}",
                            "the etcd CA key stays on the operator machine (state.caKeyOnHosts is off)",
                            (Run(f"shred -u {k} 2>/dev/null || rm -f {k}"),)))
    ca_copy = WriteFile(f"{lay.PKI_DIR}/ca.crt", ca_cert, 0o644, "etcd", "etcd")
    steps.append(file_step(f, ph, ca_copy, "etcd reads its trusted CA as the etcd user",
                           resource="cert etcd/ca (etcd copy)"))
    return steps


def _leaf_steps(ctx: Context, h: HostSpec, ph: str, ca_cert: bytes, ca_key: bytes) -> list[Step]:
    f = ctx.facts[h.name]
    files = _files(h)
    steps: list[Step] = []
    for d in cert_decisions(ctx, h, ca_cert):
        targets = [pf for pf in files if pf.spec_name == d.spec.name]
        if d.issue:
            steps.append(_issue(ctx, h.name, ph, d, targets, ca_cert, ca_key))
            continue
        steps.append(NoChange(h.name, ph, f"cert {d.spec.name}", d.reason))
        steps += _copy_steps(f, ph, targets)
    return steps


def _issue(ctx: Context, host: str, ph: str, d: CertDecision, targets: list[PkiFile],
           ca_cert: bytes, ca_key: bytes) -> Change:
    key = generate_key(ctx.config.etcd.key_type)
    cert = issue_cert(d.spec, key, ca_cert, ca_key, ctx.now)
    actions: tuple[Action, ...] = tuple(
        WriteFile(pf.path, cert if pf.kind == "cert" else key, pf.mode, pf.owner, pf.group,
                  secret=pf.kind == "key")
        for pf in targets)
    return Change(host, ph, f"cert {d.spec.name}", f"issue {d.spec.name} (CN {d.spec.common_name})",
                  d.reason, actions, key=ChangeKey("cert", d.spec.name, Act.ISSUE))


def _copy_steps(f: HostFacts, ph: str, targets: list[PkiFile]) -> list[Step]:
    """Keep the etcd-owned copies identical to kubeadm's files."""
    out: list[Step] = []
    for pf in targets:
        if not pf.path.startswith(lay.PKI_DIR):
            continue
        src = pf.path.replace(f"{lay.PKI_DIR}/", f"{lay.KUBEADM_ETCD_PKI}/")
        s, t = f.file(src), f.file(pf.path)
        ok = (s is not None and t is not None and s.sha256 == t.sha256 and t.mode == pf.mode
              and (t.owner, t.group) == (pf.owner, pf.group))
        if not ok:
            out.append(Change(
                f.host, ph, f"copy {pf.path}", f"copy {src} to {pf.path}",
                "etcd reads its own copy (kubeadm's keys are root-only)",
                (Run(f"install -m {pf.mode:04o} -o {pf.owner} -g {pf.group} {src} {pf.path}"),),
            ))
    return out


# ---------------------------------------------------------------------------------------------
# installing the binaries


def bin_dir(cfg: ClusterConfig) -> str:
    return lay.TARBALL_BIN if cfg.etcd.install == "tarball" else lay.PACKAGE_BIN


def _install(cfg: ClusterConfig, f: HostFacts) -> Step:
    if cfg.etcd.install == "package":
        return _install_package(f)
    return _install_tarball(cfg, f)


def _install_package(f: HostFacts) -> Step:
    fam = family_of(f.os)
    pkgs = fam.packages(["etcd-server", "etcd-client"]) if fam else []
    missing = [p for p in pkgs if not f.installed(p)]
    if not missing:
        pkg_version = etcd_facts(f).versions.get(lay.PACKAGE_BIN, "?")
        return NoChange(f.host, "etcd", "etcd install", f"distro etcd {pkg_version} installed")
    assert fam is not None
    # policy-rc.d keeps the package from starting etcd with its default (plain HTTP)
    # settings before homekube's TLS config is in place
    cmd = (
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d; "
        "trap 'rm -f /usr/sbin/policy-rc.d' EXIT; "
        f"( {fam.install_recorded(missing, PACKAGES_RECORD)} ); "
        "systemctl stop etcd 2>/dev/null || true"
    )
    return Change(f.host, "etcd", "etcd install", f"install {' '.join(missing)}",
                  "etcd.install is `package`", (Run(cmd, f"install {' '.join(missing)}"),),
                  key=INSTALL_KEY)


def _install_tarball(cfg: ClusterConfig, f: HostFacts) -> Step:
    want = cfg.etcd_version
    have = etcd_facts(f).versions.get(lay.TARBALL_BIN)
    if have == want:
        return NoChange(f.host, "etcd", "etcd install", f"etcd {want} installed in {lay.TARBALL_BIN}")
    art = etcd_tarball(cfg, f.arch)
    top = art.filename.removesuffix(".tar.gz")
    cmd = "\n".join([
        TEMP_DIR,
        *fetch_verified(art),
        f'tar -xzf "$d/{art.filename}" -C "$d"',
        *install_binaries([(f'"$d/{top}/{b}"', f"{lay.TARBALL_BIN}/{b}") for b in lay.BINARIES]),
        *stamp_lines(f"{lay.TARBALL_BIN}/etcd", want, VERSION_STAMP),
    ])
    what = f"upgrade etcd {have} → {want}" if have else f"install etcd {want}"
    return Change(f.host, "etcd", "etcd install", what,
                  f"release tarball from {'the mirror' if cfg.artifacts.mirror else 'upstream'}, "
                  f"SHA-256 {'pinned' if art.sha256 else 'from SHA256SUMS'}",
                  (Run(cmd, f"download, verify and install etcd {want}"),), key=INSTALL_KEY)


# ---------------------------------------------------------------------------------------------
# the etcd service and its membership


def membership(ctx: Context) -> ms.Membership:
    hosts = [h for h in ctx.config.hosts if h.name in ctx.facts]
    lists = [(h.name, etcd_facts(ctx.facts[h.name]).members) for h in hosts]
    wanted = {h.name for h in ctx.config.etcd_hosts}
    initialized = any(etcd_facts(ctx.facts[h.name]).initialized for h in hosts)
    return ms.read_membership(lists, wanted, initialized)


@dataclass(frozen=True)
class _View:
    """What the etcd phase plans from: the wanted members (with facts) and the live cluster."""

    m: ms.Membership
    want: list[HostSpec]
    joining: list[HostSpec]  # wanted, not yet members: they join one at a time, config order
    bootstrap: list[tuple[str, str]]  # (name, peer URL) of a new cluster's members
    current: list[tuple[str, str]]  # (name, peer URL) of the started live members

    @classmethod
    def of(cls, ctx: Context) -> _View:
        m = membership(ctx)
        topo = Topology(ctx.config)
        want = topo.etcd_hosts_among(list(ctx.facts))
        peers = {lay.peer_url(h) for h in want}
        joining_names = set(ms.joining([h.name for h in want], m.live))
        return cls(m, want, [h for h in want if h.name in joining_names],
                   [(h.name, lay.peer_url(h)) for h in want], ms.current_peers(m.live, peers))

    def members_for(self, h: HostSpec) -> list[tuple[str, str]]:
        """The initial-cluster `h` starts into: joining members see those before them."""
        if h not in self.joining:
            return self.bootstrap
        idx = self.joining.index(h)
        return self.current + [(j.name, lay.peer_url(j)) for j in self.joining[: idx + 1]]


class EtcdPhase:
    name = "etcd"
    title = "etcd service"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        # every host reports etcd state: a host that lost the etcd role still runs a member
        return Probes(
            files={lay.CONFIG_PATH: False, lay.UNIT_PATH: False, lay.ENV_FILE: False,
                   config.etcd.data_dir: False},
            units={lay.UNIT},
            packages={"etcd-server", "etcd-client", "etcd"},
            extra=[sh.etcd_fact(config.etcd.data_dir, VERSION_STAMP), capability_fact()],
        )

    def plan(self, ctx: Context) -> list[Step]:
        check_upgrade_gates(ctx)
        view = _View.of(ctx)
        restart_turns = itertools.count()
        steps: list[Step] = []
        for h in view.want:
            steps += _member_steps(ctx, view, h, restart_turns)
        # what is not a (re)start runs first, on every host at once
        steps = [replace(s, order=INSTALL_STAGE) if isinstance(s, Change) and s.order is None else s
                 for s in steps]
        steps += _grow(ctx, view)
        steps += _shrink(ctx, view)
        return steps


def _member_steps(ctx: Context, view: _View, h: HostSpec, restart_turns: Iterator[int]) -> list[Step]:
    """Install, configure and (re)start the member on `h` (a joining one starts in the grow stage)."""
    cfg = ctx.config
    f = ctx.facts[h.name]
    install = _install(cfg, f)
    config = _config_step(ctx, view, h)
    unit = file_step(f, EtcdPhase.name, WriteFile(lay.UNIT_PATH, _unit(cfg, f), 0o644),
                     "etcd runs as a notify-type systemd service")
    env = file_step(f, EtcdPhase.name, WriteFile(lay.ENV_FILE, sh.ETCDCTL_ENV.encode(), 0o644),
                    f"`set -a; . {lay.ENV_FILE}` points etcdctl at this member over mTLS")
    steps: list[Step] = [install, config, unit, env, _data_dir_step(cfg, f)]
    if h in view.joining:
        return steps  # started in the grow stage
    causes = [cause for cause, step in (("config", config), ("unit", unit), ("binary", install))
              if isinstance(step, Change)]
    if certs_changing(ctx, h):
        causes.append("certificates")
    steps.append(_service_step(f, view.m.fresh, causes, isinstance(unit, Change), restart_turns))
    return steps


def _config_step(ctx: Context, view: _View, h: HostSpec) -> Step:
    f = ctx.facts[h.name]
    ef = etcd_facts(f)
    state = "existing" if h in view.joining or not (view.m.fresh or not ef.initialized) else "new"
    existing = f.file(lay.CONFIG_PATH)
    keep = r.parse_bootstrap(existing.content if existing else None) if ef.initialized else {}
    conf = r.member_config(ctx.config, h, members=view.members_for(h), state=state,
                           keep_bootstrap=keep or None)
    return file_step(f, EtcdPhase.name,
                     WriteFile(lay.CONFIG_PATH, r.config_file(conf), 0o644, "root", "etcd"),
                     "etcd reads only this file; TLS for clients and peers from the first start")


def _unit(cfg: ClusterConfig, f: HostFacts) -> bytes:
    container = not f.extra.get("caps", {}).get("oom", True)
    return r.unit_file(f"{bin_dir(cfg)}/etcd", container=container)


def _data_dir_step(cfg: ClusterConfig, f: HostFacts) -> Step:
    d = cfg.etcd.data_dir
    st = f.file(d)
    if st is None or st.kind != "dir" or st.mode != 0o700 or st.owner != "etcd":
        return Change(f.host, EtcdPhase.name, f"dir {d}", f"create {d} (0700 etcd)",
                      "etcd's data directory", (Run(sh.make_data_dir(d)),))
    return NoChange(f.host, EtcdPhase.name, f"dir {d}", "data directory is 0700 etcd")


def _service_step(f: HostFacts, fresh: bool, causes: list[str], reload: bool,
                  restart_turns: Iterator[int]) -> Step:
    """Start a new cluster's member or one that is down, restart a changed one, or keep it running."""
    reload_acts: list[Action] = [Run("systemctl daemon-reload")] if reload else []
    if fresh or not f.unit(lay.UNIT).is_active:
        why, order = ("bootstrap", BOOTSTRAP) if fresh else ("down", RESTART.turn(next(restart_turns)))
        acts = [*reload_acts, _START, _wait_healthy()]
        return Change(f.host, EtcdPhase.name, f"unit {lay.UNIT}", "start etcd",
                      "bootstrap the cluster" if fresh else "etcd is not running",
                      tuple(acts), order=order, key=start_key(why))
    if causes:
        acts = [*reload_acts, MOVE_LEADER, Run("systemctl restart etcd"), _wait_healthy()]
        return Change(f.host, EtcdPhase.name, f"unit {lay.UNIT}", "restart etcd",
                      f"{', '.join(causes)} changed; one member at a time keeps quorum",
                      tuple(acts), order=RESTART.turn(next(restart_turns)), key=restart_key(causes))
    return unit_step(f, EtcdPhase.name, lay.UNIT, why="etcd must run at boot")


_START = Run("systemctl enable etcd >/dev/null 2>&1; systemctl start --no-block etcd")


def _grow(ctx: Context, view: _View) -> list[Step]:
    """Add each joining host as a learner, start it, promote it; one host at a time."""
    m = view.m
    if not view.joining or m.source is None or m.live is None:
        # a learner left over from an interrupted growth still needs promoting
        return _promote_leftovers(ctx, m)
    out: list[Step] = []
    for k, h in enumerate(view.joining):
        out.append(Change(m.source, EtcdPhase.name, f"member {h.name}", f"add {h.name} as a learner",
                          "a learner does not count for quorum until it has caught up",
                          (Run(sh.member_add(h.name, lay.peer_url(h)), f"etcdctl member add {h.name} --learner"),),
                          order=GROW.turn(k, "add"), key=member_key(h.name, "add")))
        acts = (Run("systemctl daemon-reload"), _START, _wait_healthy(sh.SERVE_CHECK))
        out.append(Change(h.name, EtcdPhase.name, f"unit {lay.UNIT}", "start etcd (joining the cluster)",
                          "initial-cluster-state existing", acts, order=GROW.turn(k, "start"), key=start_key("join")))
        out.append(_promote(m.source, h.name, GROW.turn(k, "promote")))
    return out


def _promote_leftovers(ctx: Context, m: ms.Membership) -> list[Step]:
    if m.live is None or m.source is None:
        return []
    want = {h.name for h in ctx.hosts() if h.has("etcd")}
    return [_promote(m.source, n, LEFTOVER_PROMOTE) for n in ms.leftover_learners(m.live, want)]


def _shrink(ctx: Context, view: _View) -> list[Step]:
    """Remove members no wanted host is, one at a time and quorum-checked; retire their hosts."""
    m = view.m
    if m.live is None or m.source is None:
        return []
    want = {h.name for h in view.want}
    leaving = ms.leaving(m.live, want, {lay.peer_url(h) for h in view.want})
    if not leaving:
        return []
    healthy = _healthy(ctx)
    check_removal_quorum(ctx)
    out: list[Step] = []
    for k, rm in enumerate(ms.removals(m.live, leaving, healthy)):
        x = rm.member
        src = m.source if m.source != x.name else next(iter(sorted(healthy - {x.name})), m.source)
        out.append(Change(src, EtcdPhase.name, f"member {x.name}", f"remove etcd member {x.name}",
                          f"{x.name} no longer has the etcd role; quorum kept ({rm.healthy}/{rm.remaining} healthy)",
                          (Run(sh.member_remove(x.name), f"etcdctl member remove {x.name}"),),
                          order=SHRINK.turn(k, "remove"), key=member_key(x.name, "remove")))
        if x.name in ctx.facts:
            out.append(Change(x.name, EtcdPhase.name, f"unit {lay.UNIT}", "stop etcd and set its data aside",
                              "this host is no longer an etcd member",
                              (Run(sh.set_data_aside(ctx.config.etcd.data_dir)),),
                              order=SHRINK.turn(k, "stop"), key=RETIRE_KEY))
    return out


def _promote(src: str, name: str, order: Order) -> Change:
    return Change(src, "etcd", f"member {name}", f"promote {name} to a voting member",
                  "it has caught up with the leader",
                  (Run(sh.member_promote(name), f"etcdctl member promote {name}"),),
                  order=order, key=member_key(name, "promote"))


MOVE_LEADER = Run(sh.MOVE_LEADER, "hand leadership to another member first (no election while writes go on)")


def _wait_healthy(check: str = sh.HEALTH_CHECK) -> Run:
    return Run(sh.wait_healthy("etcd", check), "wait until etcd is healthy")


def _healthy(ctx: Context) -> set[str]:
    """Hosts whose etcd answered with its members (the healthy ones, for quorum)."""
    return {h.name for h in ctx.hosts() if etcd_facts(ctx.facts[h.name]).members is not None}


def check_removal_quorum(ctx: Context, unreachable: set[str] | None = None) -> None:
    """Refuse (before anything is touched) a removal that would leave etcd without quorum."""
    m = membership(ctx)
    if m.live is None:
        return
    want = {h.name for h in ctx.config.etcd_hosts}
    leaving: list[EtcdMember] = ms.leaving(m.live, want, ())
    for rm in ms.removals(m.live, leaving, _healthy(ctx)):
        if not rm.keeps_quorum:
            raise RefusedError(ms.removal_refusal(rm),
                               hint="bring the stopped members back first, or remove one member at a time")


def running_version(f: HostFacts) -> str | None:
    ef = etcd_facts(f)
    if ef.status and ef.status.version:
        return ef.status.version
    return ef.versions.get(lay.TARBALL_BIN) or ef.versions.get(lay.PACKAGE_BIN)


def check_upgrade_gates(ctx: Context) -> None:
    """Refuse an etcd version change that skips a minor or starts below the floor."""
    cfg = ctx.config
    if cfg.etcd.install != "tarball":
        return
    running = {h.name: running_version(ctx.facts[h.name]) for h in ctx.hosts() if h.has("etcd")}
    problems = ms.upgrade_problems(running, cfg.etcd_version)
    if problems:
        raise RefusedError("unsafe etcd version change; nothing was changed:\n" + "\n".join(problems),
                           hint="set etcd.version to the next allowed step and apply once per step")
