"""etcd as its own TLS-secured systemd service: PKI, install, config, membership (pure).

Ordering inside the `etcd` phase is expressed with waves (hosts run in parallel within a
wave, waves run one after another):

    0          install binaries, user, directories, config and unit files (no (re)start)
    1          a brand-new cluster: every member starts together (initial-cluster-state new)
    10 + i     rolling restart of existing member i (config, certs or binary changed):
               one member at a time, each healthy again before the next
    100 + 3k   growth: `member add --learner` on a running member,
    101 + 3k   start the new member with initial-cluster-state existing, wait until it serves,
    102 + 3k   `member promote` once it has caught up; one new member at a time
    200 + k    shrink: quorum-checked `member remove`, then stop etcd on the removed host
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

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
from homekube.facts.base import Fact, shell_quote
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
from homekube.plan.resources import file_step, unit_step
from homekube.render import etcd as r

ENV_FILE = "/etc/etcd/etcdctl.env"
TARBALL_BIN = "/usr/local/bin"
PACKAGE_BIN = "/usr/bin"
#: how every local client (etcdctl, curl to the JSON gateway) reaches the member on this host
LOCAL_ENDPOINT = "https://127.0.0.1:2379"
CLIENT_CA = "/etc/kubernetes/pki/etcd/ca.crt"
CLIENT_CERT = "/etc/kubernetes/pki/etcd/healthcheck-client.crt"
CLIENT_KEY = "/etc/kubernetes/pki/etcd/healthcheck-client.key"
ETCDCTL_ENV = (
    "ETCDCTL_API=3\n"
    f"ETCDCTL_ENDPOINTS={LOCAL_ENDPOINT}\n"
    f"ETCDCTL_CACERT={CLIENT_CA}\n"
    f"ETCDCTL_CERT={CLIENT_CERT}\n"
    f"ETCDCTL_KEY={CLIENT_KEY}\n"
    "ETCDCTL_DIAL_TIMEOUT=3s\n"
)
#: one simple command (composes with ||, && and pipes): etcdctl pointed at the local member
#: everything on the command line, nothing from ETCDCTL_* variables: etcdctl refuses a flag
#: that shadows a variable, and `move-leader` sets its connection flags itself
ETCDCTL = (
    f"etcdctl --endpoints={LOCAL_ENDPOINT} --cacert={CLIENT_CA} --cert={CLIENT_CERT} "
    f"--key={CLIENT_KEY} --dial-timeout=3s --command-timeout=3s"
)
HEALTHY = f"{ETCDCTL} endpoint health >/dev/null 2>&1"
#: a learner refuses the linearizable read behind `endpoint health`; `endpoint status` is
#: answered by any member that serves
SERVING = f"{ETCDCTL} endpoint status >/dev/null 2>&1"


# ---------------------------------------------------------------------------------------------
# facts


@dataclass(frozen=True)
class EtcdMember:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"


@dataclass(frozen=True)
class EtcdHostFacts:
    user: bool
    versions: dict[str, str]  # binary dir -> version
    initialized: bool
    members: list[EtcdMember] | None  # None: could not ask (etcd not running here)
    status: dict[str, Any] | None


def _parse_version(text: str) -> str:
    for line in text.splitlines():
        if "etcd Version:" in line:
            return line.split(":", 1)[1].strip()
    return ""


def parse_members(data: Any) -> list[EtcdMember] | None:
    if not isinstance(data, dict) or "members" not in data:
        return None
    out = []
    for m in data.get("members") or []:
        out.append(EtcdMember(
            id=int(m.get("ID", 0)), name=str(m.get("name", "")),
            peer_urls=tuple(m.get("peerURLs") or ()), client_urls=tuple(m.get("clientURLs") or ()),
            learner=bool(m.get("isLearner", False)),
        ))
    return out


def parse_etcd_fact(text: str) -> EtcdHostFacts:
    kv: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            kv[k.strip()] = v
    versions = {}
    for d in (TARBALL_BIN, PACKAGE_BIN):
        v = _parse_version(kv.get(f"version{d}", "").replace("\\n", "\n"))
        if v:
            versions[d] = v
    members = None
    status = None
    try:
        members = parse_members(json.loads(kv["members"])) if kv.get("members") else None
    except json.JSONDecodeError:
        members = None
    try:
        st = json.loads(kv["status"]) if kv.get("status") else None
    except json.JSONDecodeError:
        st = None
    # etcdctl wraps it: [{"Endpoint": ..., "Status": {...}}]; the gateway answers {...}
    if isinstance(st, list) and st and isinstance(st[0], dict):
        st = st[0].get("Status", st[0])
    status = st if isinstance(st, dict) and "version" in st else None
    return EtcdHostFacts(
        user=bool(kv.get("user")), versions=versions,
        initialized=kv.get("initialized") == "yes", members=members, status=status,
    )


#: what the tarball install recorded about the binary it put in TARBALL_BIN: "inode size
#: mtime version". While the binary is that same file, the fact reads its version from here
#: instead of starting it (`etcd --version` costs ~17 ms of CPU on every host, every run).
VERSION_STAMP = f"{STAMP_DIR}/etcd-binary"
_CURL_TLS = f"--cacert {CLIENT_CA} --cert {CLIENT_CERT} --key {CLIENT_KEY}"
_GATEWAY = f"{LOCAL_ENDPOINT}/v3"


def _gateway_call(path: str) -> str:
    return f"-sS --connect-timeout 3 -m 5 {_CURL_TLS} -X POST -d '{{}}' -w '\\n' {_GATEWAY}/{path}"


def etcd_fact(cfg: ClusterConfig) -> Fact[EtcdHostFacts]:
    """Who etcd runs as, the installed binaries' versions, and what the local member says.

    The member list and status come from etcd's JSON gateway with one `curl` (two requests,
    one TLS connection) when curl is there: two `etcdctl` runs cost ~55 ms of CPU per host.
    A stopped member refuses the connection at once, so no `systemctl is-active` is needed.
    """
    data = shell_quote(cfg.etcd.data_dir)
    cmd = (
        "getent passwd etcd >/dev/null && echo user=etcd\n"
        f"for d in {TARBALL_BIN} {PACKAGE_BIN}; do [ -x \"$d/etcd\" ] || continue; v=\n"
        f'if [ "$d" = {TARBALL_BIN} ] && [ -r {VERSION_STAMP} ]; then '
        f'read -r i s m v < {VERSION_STAMP}; [ "$i $s $m" = "$(stat -c \'%i %s %Y\' "$d/etcd")" ] || v=; fi\n'
        'if [ -n "$v" ]; then printf "version%s=etcd Version: %s\\n" "$d" "$v"; else '
        'printf "version%s=%s\\n" "$d" '
        '"$("$d/etcd" --version 2>/dev/null | tr "\\n" "|" | sed "s/|/\\\\\\\\n/g")"; fi; done\n'
        f'[ -d {data}/member ] && echo initialized=yes\n'
        f"[ -r {ENV_FILE} ] || exit 0\n"
        "if command -v curl >/dev/null; then "
        f"curl {_gateway_call('cluster/member/list')} --next {_gateway_call('maintenance/status')} "
        "2>/dev/null | { IFS= read -r m; IFS= read -r s; printf 'members=%s\\nstatus=%s\\n' \"$m\" \"$s\"; }\n"
        "elif systemctl is-active -q etcd && command -v etcdctl >/dev/null; then "
        f'printf "members=%s\\n" "$({ETCDCTL} member list -w json 2>/dev/null | tr -d "\\n")"; '
        f'printf "status=%s\\n" "$({ETCDCTL} endpoint status -w json 2>/dev/null | tr -d "\\n")"; fi'
    )
    return Fact("etcd", cmd, parse_etcd_fact)


def etcd_facts(f: HostFacts) -> EtcdHostFacts:
    v = f.extra.get("etcd")
    return v if isinstance(v, EtcdHostFacts) else EtcdHostFacts(False, {}, False, None, None)


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
    validity = timedelta(days=365)
    return etcd_member_specs(h.name, ipv4, ipv6, cfg.etcd.extra_sans,
                             control_plane=True, validity=validity)


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
    by_spec = {pf.spec_name: pf for pf in _files(h) if pf.kind == "cert" and pf.path.startswith("/etc/kubernetes")}
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


class EtcdPkiPhase:
    name = "etcd-pki"
    title = "etcd certificates"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        if not host.has("etcd"):
            return Probes()
        return Probes(files=pki_probes(config, host) | {CA_KEY_ON_HOST: True}, packages={"passwd"})

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
            steps += self._host(ctx, h, ca_cert, ca_key)
        return steps

    def _host(self, ctx: Context, h: HostSpec, ca_cert: bytes, ca_key: bytes) -> list[Step]:
        f = ctx.facts[h.name]
        ph = self.name
        steps: list[Step] = []
        user = "etcd" if etcd_facts(f).user else None
        # directories first (the etcd copy is owned by the etcd user, created in this phase)
        dir_actions: list[Action] = []
        if user is None:
            dir_actions.append(Run(USERADD, "create the etcd system user"))
        for pd in member_dirs():
            st = f.file(pd.path)
            if st is None or st.kind != "dir" or st.mode != pd.mode or (st.owner, st.group) != (pd.owner, pd.group):
                dir_actions.append(Run(f"install -d -m {pd.mode:04o} -o {pd.owner} -g {pd.group} {pd.path}"))
        if dir_actions:
            steps.append(Change(h.name, ph, "pki directories", "create PKI directories and the etcd user",
                                "etcd runs as its own user and reads its own copies of the keys",
                                tuple(dir_actions)))
        ca_want = WriteFile(f"{r.KUBEADM_PKI}/etcd/ca.crt", ca_cert, 0o644)
        steps.append(file_step(f, ph, ca_want, "clients and members trust the etcd CA",
                               resource="cert etcd/ca"))
        if ctx.config.state.ca_key_on_hosts:
            steps.append(file_step(f, ph, WriteFile(CA_KEY_ON_HOST, ca_key, 0o600, secret=True),
                                   "state.caKeyOnHosts: kubeadm-style tools on the host may sign",
                                   resource="key etcd/ca"))
        elif f.file(CA_KEY_ON_HOST) is not None:
            steps.append(Change(h.name, ph, "key etcd/ca", f"remove {CA_KEY_ON_HOST}",
                                "the etcd CA key stays on the operator machine (state.caKeyOnHosts is off)",
                                (Run(f"shred -u {CA_KEY_ON_HOST} 2>/dev/null || rm -f {CA_KEY_ON_HOST}"),)))
        ca_copy = WriteFile(f"{r.ETCD_PKI}/ca.crt", ca_cert, 0o644, "etcd", "etcd")
        steps.append(file_step(f, ph, ca_copy, "etcd reads its trusted CA as the etcd user",
                               resource="cert etcd/ca (etcd copy)"))
        files = _files(h)
        for d in cert_decisions(ctx, h, ca_cert):
            targets = [pf for pf in files if pf.spec_name == d.spec.name]
            if d.issue:
                key = generate_key(ctx.config.etcd.key_type)
                cert = issue_cert(d.spec, key, ca_cert, ca_key, ctx.now)
                actions: list[Action] = []
                for pf in targets:
                    content = cert if pf.kind == "cert" else key
                    actions.append(WriteFile(pf.path, content, pf.mode, pf.owner, pf.group,
                                             secret=pf.kind == "key"))
                steps.append(Change(h.name, ph, f"cert {d.spec.name}", f"issue {d.spec.name} (CN {d.spec.common_name})",
                                    d.reason, tuple(actions), key=ChangeKey("cert", d.spec.name, Act.ISSUE)))
                continue
            steps.append(NoChange(h.name, ph, f"cert {d.spec.name}", d.reason))
            # keep the etcd-owned copies identical to kubeadm's files
            for pf in targets:
                if not pf.path.startswith(r.ETCD_PKI):
                    continue
                src = pf.path.replace(f"{r.ETCD_PKI}/", f"{r.KUBEADM_PKI}/etcd/")
                s, t = f.file(src), f.file(pf.path)
                ok = (s is not None and t is not None and s.sha256 == t.sha256 and t.mode == pf.mode
                      and (t.owner, t.group) == (pf.owner, pf.group))
                if not ok:
                    steps.append(Change(
                        h.name, ph, f"copy {pf.path}", f"copy {src} to {pf.path}",
                        "etcd reads its own copy (kubeadm's keys are root-only)",
                        (Run(f"install -m {pf.mode:04o} -o {pf.owner} -g {pf.group} {src} {pf.path}"),),
                    ))
        return steps


CA_KEY_ON_HOST = "/etc/kubernetes/pki/etcd/ca.key"

#: identity of the Change that installs or upgrades etcd's binaries on a host
INSTALL_KEY = ChangeKey("etcd", "binaries", Act.INSTALL)


def restart_key(causes: list[str] | tuple[str, ...]) -> ChangeKey:
    """Identity of a rolling restart of etcd.service for `causes` (config, unit, binary, certificates)."""
    return ChangeKey("unit", "etcd.service", Act.RESTART, frozenset(causes))

USERADD = (
    "getent passwd etcd >/dev/null || { useradd --system --user-group --home-dir /var/lib/etcd "
    "--no-create-home --shell /usr/sbin/nologin etcd && install -d -m 0755 /var/lib/homekube && "
    "touch /var/lib/homekube/etcd-user; }"
)


def certs_changing(ctx: Context, h: HostSpec) -> bool:
    """Will the etcd-pki phase write new certs for `h` (so etcd must restart)?"""
    if ctx.local.etcd_ca_cert is None:
        return True
    return any(d.issue for d in cert_decisions(ctx, h, ctx.local.etcd_ca_cert))


# ---------------------------------------------------------------------------------------------
# the etcd service and its membership


def bin_dir(cfg: ClusterConfig) -> str:
    return TARBALL_BIN if cfg.etcd.install == "tarball" else PACKAGE_BIN


def _install(cfg: ClusterConfig, f: HostFacts) -> Step:
    h = f.host
    ef = etcd_facts(f)
    want = cfg.etcd_version
    if cfg.etcd.install == "package":
        fam = family_of(f.os)
        pkgs = fam.packages(["etcd-server", "etcd-client"]) if fam else []
        missing = [p for p in pkgs if not f.installed(p)]
        if not missing:
            pkg_version = ef.versions.get(PACKAGE_BIN, "?")
            return NoChange(h, "etcd", "etcd install", f"distro etcd {pkg_version} installed")
        assert fam is not None
        # policy-rc.d keeps the package from starting etcd with its default (plain HTTP)
        # settings before homekube's TLS config is in place
        cmd = (
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d; "
            "trap 'rm -f /usr/sbin/policy-rc.d' EXIT; "
            f"( {fam.install_recorded(missing, PACKAGES_RECORD)} ); "
            "systemctl stop etcd 2>/dev/null || true"
        )
        return Change(h, "etcd", "etcd install", f"install {' '.join(missing)}",
                      "etcd.install is `package`", (Run(cmd, f"install {' '.join(missing)}"),),
                      key=INSTALL_KEY)
    have: str | None = ef.versions.get(TARBALL_BIN)
    if have == want:
        return NoChange(h, "etcd", "etcd install", f"etcd {want} installed in {TARBALL_BIN}")
    art = etcd_tarball(cfg, f.arch)
    top = art.filename.removesuffix(".tar.gz")
    cmd = "\n".join([
        TEMP_DIR,
        *fetch_verified(art),
        f'tar -xzf "$d/{art.filename}" -C "$d"',
        *install_binaries([(f'"$d/{top}/{b}"', f"{TARBALL_BIN}/{b}")
                           for b in ("etcd", "etcdctl", "etcdutl")]),
        *stamp_lines(f"{TARBALL_BIN}/etcd", want, VERSION_STAMP),
    ])
    what = f"upgrade etcd {have} → {want}" if have else f"install etcd {want}"
    return Change(h, "etcd", "etcd install", what,
                  f"release tarball from {'the mirror' if cfg.artifacts.mirror else 'upstream'}, "
                  f"SHA-256 {'pinned' if art.sha256 else 'from SHA256SUMS'}",
                  (Run(cmd, f"download, verify and install etcd {want}"),), key=INSTALL_KEY)


@dataclass(frozen=True)
class Membership:
    live: list[EtcdMember] | None
    source: str | None  # host the member list came from
    fresh: bool  # no member has data and none runs: bootstrap all together


def membership(ctx: Context) -> Membership:
    hosts = [h for h in ctx.config.hosts if h.name in ctx.facts]
    lists = [(h.name, etcd_facts(ctx.facts[h.name]).members) for h in hosts]
    best: tuple[str, list[EtcdMember]] | None = None
    for name, ms in lists:
        # prefer a desired etcd host as the one we talk to
        if ms and (best is None or (ctx.config.host(name).has("etcd")
                                    and not ctx.config.host(best[0]).has("etcd"))):
            best = (name, ms)
    initialized = any(etcd_facts(ctx.facts[h.name]).initialized for h in hosts)
    if best is None:
        return Membership(None, None, fresh=not initialized)
    return Membership(best[1], best[0], fresh=False)


class EtcdPhase:
    name = "etcd"
    title = "etcd service"

    def probes(self, config: ClusterConfig, host: HostSpec) -> Probes:
        # every host reports etcd state: a host that lost the etcd role still runs a member
        return Probes(
            files={r.CONFIG_PATH: False, r.UNIT_PATH: False, ENV_FILE: False,
                   config.etcd.data_dir: False},
            units={"etcd.service"},
            packages={"etcd-server", "etcd-client", "etcd"},
            extra=[etcd_fact(config), capability_fact()],
        )

    def plan(self, ctx: Context) -> list[Step]:
        cfg = ctx.config
        want = [h for h in ctx.hosts() if h.has("etcd")]
        check_upgrade_gates(ctx)
        m = membership(ctx)
        steps: list[Step] = []
        live_names = {x.name for x in m.live} if m.live is not None else set()
        joining = [h for h in want if h.name not in live_names] if m.live is not None else []
        bootstrap_members = [(h.name, r.peer_url(h)) for h in want]
        running = [x for x in (m.live or []) if x.name in {h.name for h in want}]
        # a member added by an interrupted growth that never started has no name yet: it is the
        # pending join of the host with that peer URL, which the growth waves below finish
        current = [(x.name, x.peer_urls[0] if x.peer_urls else "") for x in (m.live or [])
                   if not _pending_join(x, want)]

        restart_wave = 10
        for h in want:
            f = ctx.facts[h.name]
            ef = etcd_facts(f)
            caps = f.extra.get("caps", {})
            steps.append(_install(cfg, f))
            if h in joining:
                idx = joining.index(h)
                members = current + [(j.name, r.peer_url(j)) for j in joining[: idx + 1]]
                state = "existing"
            else:
                members = bootstrap_members
                state = "new" if m.fresh or not ef.initialized else "existing"
            existing_cfg = f.file(r.CONFIG_PATH)
            keep = r.parse_bootstrap(existing_cfg.content if existing_cfg else None) if ef.initialized else {}
            conf = r.member_config(cfg, h, members=members, state=state, keep_bootstrap=keep or None)
            changed: list[str] = []
            s = file_step(f, self.name, WriteFile(r.CONFIG_PATH, r.config_file(conf), 0o644, "root", "etcd"),
                          "etcd reads only this file; TLS for clients and peers from the first start")
            steps.append(s)
            if isinstance(s, Change):
                changed.append("config")
            container = not caps.get("oom", True)
            unit = r.unit_file(f"{bin_dir(cfg)}/etcd", container=container)
            s = file_step(f, self.name, WriteFile(r.UNIT_PATH, unit, 0o644),
                          "etcd runs as a notify-type systemd service")
            steps.append(s)
            reload = isinstance(s, Change)
            if reload:
                changed.append("unit")
            steps.append(file_step(f, self.name, WriteFile(ENV_FILE, ETCDCTL_ENV.encode(), 0o644),
                                   "`set -a; . /etc/etcd/etcdctl.env` points etcdctl at this member over mTLS"))
            dd = f.file(cfg.etcd.data_dir)
            if dd is None or dd.kind != "dir" or dd.mode != 0o700 or dd.owner != "etcd":
                steps.append(Change(h.name, self.name, f"dir {cfg.etcd.data_dir}",
                                    f"create {cfg.etcd.data_dir} (0700 etcd)", "etcd's data directory",
                                    (Run(f"install -d -m 0700 -o etcd -g etcd {shell_quote(cfg.etcd.data_dir)}"),)))
            else:
                steps.append(NoChange(h.name, self.name, f"dir {cfg.etcd.data_dir}", "data directory is 0700 etcd"))
            if _install_changes(steps, h.name):
                changed.append("binary")
            if certs_changing(ctx, h):
                changed.append("certificates")

            st = f.unit("etcd.service")
            if h in joining:
                continue  # started in its growth wave below
            if m.fresh or not st.is_active:
                # first start (together with the other members), or a member that is down
                wave = 1 if m.fresh else restart_wave
                if not m.fresh:
                    restart_wave += 1
                acts: list[Action] = [Run("systemctl daemon-reload")] if reload else []
                acts.append(Run("systemctl enable etcd >/dev/null 2>&1; systemctl start --no-block etcd"))
                acts.append(_wait_healthy("etcd"))
                steps.append(Change(h.name, self.name, "unit etcd.service", "start etcd",
                                    "bootstrap the cluster" if m.fresh else "etcd is not running",
                                    tuple(acts), wave=wave))
            elif changed:
                acts = [Run("systemctl daemon-reload")] if reload else []
                acts += [MOVE_LEADER, Run("systemctl restart etcd"), _wait_healthy("etcd")]
                steps.append(Change(h.name, self.name, "unit etcd.service", "restart etcd",
                                    f"{', '.join(changed)} changed; one member at a time keeps quorum",
                                    tuple(acts), wave=restart_wave, key=restart_key(changed)))
                restart_wave += 1
            else:
                steps.append(unit_step(f, self.name, "etcd.service", why="etcd must run at boot"))

        steps += self._grow(ctx, m, joining)
        steps += self._shrink(ctx, m, want, running)
        return steps

    def _grow(self, ctx: Context, m: Membership, joining: list[HostSpec]) -> list[Step]:
        if not joining or m.source is None or m.live is None:
            # a learner left over from an interrupted growth still needs promoting
            return self._promote_leftovers(ctx, m)
        src = m.source
        out: list[Step] = []
        for k, h in enumerate(joining):
            base = 100 + 3 * k
            peer = r.peer_url(h)
            # etcd refuses reconfiguration ("unhealthy cluster") until every voter has been
            # connected for a few seconds, e.g. right after the previous promote: retry. A retry
            # after an attempt that timed out on the client but was applied by etcd finds our
            # own peer URL taken ("Peer URLs already exists", seen under load): that is done.
            add = (
                f"{ETCDCTL} member list | grep -qF -e ', {h.name}, ' -e ', {peer}, ' && exit 0; "
                "end=$((SECONDS + 90)); while :; do "
                f"out=$({ETCDCTL} member add {h.name} --peer-urls={peer} --learner 2>&1) && exit 0; "
                "case $out in *'Peer URLs already exists'*) exit 0;; "
                f"*'unhealthy cluster'*|*'too many learner'*) ;; *) echo \"$out\" >&2; exit 1;; esac; "
                '[ $SECONDS -lt $end ] || { echo "$out" >&2; exit 1; }; sleep 0.5; done'
            )
            out.append(Change(src, self.name, f"member {h.name}", f"add {h.name} as a learner",
                              "a learner does not count for quorum until it has caught up",
                              (Run(add, f"etcdctl member add {h.name} --learner"),), wave=base))
            f = ctx.facts[h.name]
            acts: list[Action] = [Run("systemctl daemon-reload"),
                                  Run("systemctl enable etcd >/dev/null 2>&1; systemctl start --no-block etcd"),
                                  _wait_healthy("etcd", SERVING)]
            out.append(Change(h.name, self.name, "unit etcd.service", "start etcd (joining the cluster)",
                              "initial-cluster-state existing", tuple(acts), wave=base + 1))
            del f
            out.append(_promote(src, h.name, base + 2))
        return out

    def _promote_leftovers(self, ctx: Context, m: Membership) -> list[Step]:
        if m.live is None or m.source is None:
            return []
        want = {h.name for h in ctx.hosts() if h.has("etcd")}
        return [_promote(m.source, x.name, 150) for x in m.live if x.learner and x.name in want]

    def _shrink(self, ctx: Context, m: Membership, want: list[HostSpec],
                running: list[EtcdMember]) -> list[Step]:
        if m.live is None or m.source is None:
            return []
        want_names = {h.name for h in want}
        leaving = [x for x in m.live if x.name not in want_names and not _pending_join(x, want)]
        if not leaving:
            return []
        out: list[Step] = []
        healthy = _healthy(ctx)
        check_removal_quorum(ctx)
        voters = [x for x in m.live if not x.learner]
        for k, x in enumerate(leaving):
            remaining = [v for v in voters if v.name != x.name]
            ok = len([v for v in remaining if v.name in healthy])
            voters = remaining
            src = m.source if m.source != x.name else next(iter(sorted(healthy - {x.name})), m.source)
            # like `member add`, removal is refused ("unhealthy cluster") until every voter has
            # been connected for a few seconds: retry for a while
            rm = (f"id=$({ETCDCTL} member list | awk -F', ' '$3==\"{x.name}\"{{print $1}}'); "
                  '[ -z "$id" ] && exit 0; end=$((SECONDS + 90)); while :; do '
                  f'out=$({ETCDCTL} member remove "$id" 2>&1) && exit 0; '
                  "case $out in *'unhealthy cluster'*) ;; *) echo \"$out\" >&2; exit 1;; esac; "
                  '[ $SECONDS -lt $end ] || { echo "$out" >&2; exit 1; }; sleep 0.5; done')
            out.append(Change(src, self.name, f"member {x.name}", f"remove etcd member {x.name}",
                              f"{x.name} no longer has the etcd role; quorum kept ({ok}/{len(remaining)} healthy)",
                              (Run(rm, f"etcdctl member remove {x.name}"),), wave=200 + 2 * k))
            if x.name in ctx.facts:
                data = shell_quote(ctx.config.etcd.data_dir)
                stop = (f"systemctl disable --now etcd >/dev/null 2>&1 || true; "
                        f"[ -d {data}/member ] && mv {data} {data}.removed-$(date +%Y%m%d%H%M%S) || true; "
                        f"install -d -m 0700 -o etcd -g etcd {data}")
                out.append(Change(x.name, self.name, "unit etcd.service", "stop etcd and set its data aside",
                                  "this host is no longer an etcd member", (Run(stop),), wave=201 + 2 * k))
        return out


def _pending_join(x: EtcdMember, want: list[HostSpec]) -> bool:
    """An added member that never started (no name yet) whose peer URL is a wanted host's."""
    return not x.name and bool(x.peer_urls) and x.peer_urls[0] in {r.peer_url(h) for h in want}


def _promote(src: str, name: str, wave: int) -> Change:
    cmd = (
        "end=$((SECONDS + 120)); while [ $SECONDS -lt $end ]; do "
        f"id=$({ETCDCTL} member list | awk -F', ' '$3==\"{name}\"{{print $1\" \"$NF}}'); "
        f'set -- $id; [ -n "${{1:-}}" ] || {{ echo "{name} is not a member" >&2; exit 1; }}; '
        f'[ "${{2:-}}" = true ] || exit 0; '
        f'{ETCDCTL} member promote "$1" >/dev/null 2>&1 && exit 0; sleep 0.2; done; '
        f'echo "{name} did not catch up within 120s" >&2; exit 1'
    )
    return Change(src, "etcd", f"member {name}", f"promote {name} to a voting member",
                  "it has caught up with the leader", (Run(cmd, f"etcdctl member promote {name}"),),
                  wave=wave)


#: a leader hands leadership to another voter before it restarts, so writes see no election
MOVE_LEADER = Run(
    f"set -- $({ETCDCTL} endpoint status 2>/dev/null | awk -F', ' '{{print $2, $5}}'); "
    '[ "${2:-}" = true ] || exit 0; '
    f"to=$({ETCDCTL} member list | awk -F', ' -v me=\"$1\" "
    "'$1 != me && $2 == \"started\" && $NF == \"false\" {print $1; exit}'); "
    f'[ -z "$to" ] || {ETCDCTL} move-leader "$to" >/dev/null',
    "hand leadership to another member first (no election while writes go on)",
)


def _wait_healthy(unit: str, condition: str = HEALTHY, seconds: int = 120) -> Run:
    cmd = (
        f"end=$((SECONDS + {seconds})); while [ $SECONDS -lt $end ]; do if {condition}; then exit 0; fi; "
        f"if systemctl -q is-failed {unit}; then break; fi; sleep 0.2; done; "
        f'echo "{unit} did not become healthy" >&2; systemctl status --no-pager {unit} >&2 || true; '
        f"journalctl -u {unit} -n 25 --no-pager >&2 || true; exit 1"
    )
    return Run(cmd, f"wait until {unit} is healthy")


def _install_changes(steps: list[Step], host: str) -> bool:
    return any(isinstance(s, Change) and s.host == host and s.key == INSTALL_KEY for s in steps)


def _healthy(ctx: Context) -> set[str]:
    """Members whose host answered and whose etcd served a member list."""
    return {h.name for h in ctx.hosts() if etcd_facts(ctx.facts[h.name]).members is not None}


def check_removal_quorum(ctx: Context, unreachable: set[str] | None = None) -> None:
    """Refuse (before anything is touched) a removal that would leave etcd without quorum."""
    m = membership(ctx)
    if m.live is None:
        return
    want = {h.name for h in ctx.config.hosts if h.has("etcd")}
    leaving = [x for x in m.live if x.name not in want]
    healthy = _healthy(ctx)
    voters = [x for x in m.live if not x.learner]
    for x in leaving:
        remaining = [v for v in voters if v.name != x.name]
        need = len(remaining) // 2 + 1
        ok = len([v for v in remaining if v.name in healthy])
        if not x.learner and (ok < need or not remaining):
            down = sorted(v.name for v in remaining if v.name not in healthy)
            why = f" ({', '.join(down)} {'is' if len(down) == 1 else 'are'} down or unreachable)" if down else ""
            raise RefusedError(
                f"refusing to remove etcd member {x.name}: it would leave {ok} healthy of "
                f"{len(remaining)} members{why}; etcd needs {need} for quorum. Nothing was changed.",
                hint="bring the stopped members back first, or remove one member at a time",
            )
        voters = remaining


def _ver(v: str) -> tuple[int, int, int] | None:
    parts = v.strip().lstrip("v").split("-")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) > 2 else 0)
    except (ValueError, IndexError):
        return None


#: the lowest patch of a minor from which the next minor may be reached (facts.md §3.2)
UPGRADE_FLOOR: dict[tuple[int, int], tuple[int, int, int]] = {
    (3, 5): (3, 5, 24),  # 3.5 → 3.6: the learner bug fixes of 3.5.20 / 3.5.24 first
    (3, 6): (3, 6, 11),  # 3.6 → 3.7: every member on ≥ 3.6.11
}


def version_gate(current: str, target: str) -> str | None:
    """Why `current` → `target` is not a safe etcd upgrade, or None when it is."""
    c, t = _ver(current), _ver(target)
    if c is None or t is None or c == t:
        return None
    if t < c:
        return f"etcd {current} → {target} is a downgrade, which etcd does not support"
    if t[:2] == c[:2]:
        return None  # patch releases of one minor are interchangeable
    if t[0] != c[0] or t[1] != c[1] + 1:
        return f"etcd {current} → {target} skips a minor: upgrade one minor at a time"
    floor = UPGRADE_FLOOR.get(c[:2])
    if floor is not None and c < floor:
        need = ".".join(map(str, floor))
        return f"etcd {current} → {target}: every member must be on {need} or later first"
    return None


def running_version(f: HostFacts) -> str | None:
    ef = etcd_facts(f)
    if ef.status and ef.status.get("version"):
        return str(ef.status["version"])
    return ef.versions.get(TARBALL_BIN) or ef.versions.get(PACKAGE_BIN)


def check_upgrade_gates(ctx: Context) -> None:
    """Refuse an etcd version change that skips a minor or starts below the floor."""
    cfg = ctx.config
    if cfg.etcd.install != "tarball":
        return
    target = cfg.etcd_version
    problems = []
    for h in ctx.hosts():
        if not h.has("etcd"):
            continue
        cur = running_version(ctx.facts[h.name])
        if cur and (why := version_gate(cur, target)):
            problems.append(f"{h.name}: {why}")
    if problems:
        raise RefusedError("unsafe etcd version change; nothing was changed:\n" + "\n".join(problems),
                           hint="set etcd.version to the next allowed step and apply once per step")
