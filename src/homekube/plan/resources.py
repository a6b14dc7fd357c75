"""Desired-state comparisons shared by every component: file, unit, packages, sysctl.

Each helper compares what a host reported with what the config wants and returns a Change
(with the actions that converge it) or a NoChange saying why nothing is needed. They are
pure; the facts were gathered before.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable

from homekube.facts.host import HostFacts
from homekube.plan.model import Act, Action, Change, ChangeKey, NoChange, Run, Step, WriteFile
from homekube.shell import Cmd, Raw, Script, poll_until, quote, sh


def file_step(
    facts: HostFacts, phase: str, want: WriteFile, why: str, *, resource: str | None = None
) -> Step:
    """Converge one file: content, mode and owner."""
    host = facts.host
    res = resource or f"file {want.path}"
    have = facts.file(want.path)
    sha = hashlib.sha256(want.content).hexdigest()
    if have is None:
        diff = None if want.secret else _diff(b"", want.content, want.path)
        return Change(host, phase, res, f"create {want.path}", why, (want,), diff=diff,
                      key=ChangeKey("file", want.path, Act.CREATE))
    problems = []
    if have.kind != "file":
        problems.append(f"is a {have.kind}")
    if have.sha256 != sha:
        problems.append("content differs")
    if have.mode != want.mode:
        problems.append(f"mode {have.mode:04o} → {want.mode:04o}")
    if (have.owner, have.group) != (want.owner, want.group):
        problems.append(f"owner {have.owner}:{have.group} → {want.owner}:{want.group}")
    if not problems:
        return NoChange(host, phase, res, f"{want.path} is up to date")
    diff = None
    if have.sha256 != sha and not want.secret and have.content is not None:
        diff = _diff(have.content, want.content, want.path)
    return Change(
        host, phase, res, f"update {want.path} ({', '.join(problems)})", why, (want,), diff=diff,
        key=ChangeKey("file", want.path, Act.UPDATE),
    )


def _diff(old: bytes, new: bytes, path: str) -> str | None:
    try:
        a = old.decode().splitlines(keepends=True)
        b = new.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return None
    return "".join(difflib.unified_diff(a, b, fromfile=f"{path} (host)", tofile=f"{path} (homekube)"))


def unit_step(
    facts: HostFacts,
    phase: str,
    unit: str,
    *,
    why: str,
    enabled: bool = True,
    active: bool = True,
    restart_because: Iterable[str] = (),
    daemon_reload: bool = False,
    wait: str | None = None,
) -> Step:
    """Converge a systemd unit: enabled/started, or restarted when its inputs changed.

    `restart_because` lists the resources whose change requires a restart (files changed in
    this plan); `wait` is a shell condition polled after (re)start so a phase only ends when
    the service really serves.
    """
    host = facts.host
    st = facts.unit(unit)
    reasons = list(restart_because)
    actions: list[Action] = []
    if daemon_reload:
        actions.append(run(Cmd("systemctl", "daemon-reload"), "reload systemd unit files"))
    if active and not st.is_active:
        what = f"start {unit}"
        if enabled and not st.is_enabled:
            actions.append(run(Cmd("systemctl", "enable", "--now", unit)))
            what = f"enable and start {unit}"
        else:
            actions.append(run(Cmd("systemctl", "start", unit)))
        if wait:
            actions.append(_wait(wait, unit))
        state = "failed" if st.active == "failed" else "not running"
        return Change(host, phase, f"unit {unit}", what, f"{why} ({unit} is {state})", tuple(actions))
    if active and reasons:
        if enabled and not st.is_enabled:
            actions.append(run(Cmd("systemctl", "enable", unit)))
        actions.append(run(Cmd("systemctl", "restart", unit)))
        if wait:
            actions.append(_wait(wait, unit))
        return Change(
            host, phase, f"unit {unit}", f"restart {unit}",
            f"{', '.join(reasons)} changed", tuple(actions),
        )
    if enabled and not st.is_enabled and st.enabled != "static":
        actions.append(run(Cmd("systemctl", "enable", unit)))
        return Change(host, phase, f"unit {unit}", f"enable {unit}", why, tuple(actions))
    if not active and st.is_active:
        cmd = Cmd("systemctl", "disable", "--now", unit) if not enabled else Cmd("systemctl", "stop", unit)
        return Change(host, phase, f"unit {unit}", f"stop {unit}", why, (run(cmd),))
    if not enabled and st.is_enabled and st.enabled != "static":
        return Change(host, phase, f"unit {unit}", f"disable {unit}", why, (run(Cmd("systemctl", "disable", unit)),))
    state = "running" if st.is_active else "stopped"
    en = "enabled" if st.is_enabled else "disabled"
    return NoChange(host, phase, f"unit {unit}", f"{unit} is {en} and {state}")


def _wait(condition: str, what: str, seconds: int = 60) -> Run:
    """Poll `condition` (a shell test) every 0.2 s for up to `seconds`; never a fixed sleep."""
    cmd = poll_until(sh(condition, compound=True), seconds=seconds, failure=f"{what} not ready after {seconds}s",
                     diagnose=[Cmd("journalctl", "-u", what, "-n", "20", "--no-pager").to_stderr()])
    return Run(cmd.text, f"wait until {what} is ready")


def run(cmd: Script, description: str = "") -> Run:
    """A Run of `cmd`; one holding a Secret is shown (in plans, progress and errors) as its
    masked text unless a description says what it does."""
    if cmd.secret:
        return Run(cmd.text, description or cmd.shown, secret=True)
    return Run(cmd.text, description)


def packages_step(
    facts: HostFacts, phase: str, packages: list[str], install_command: str, why: str
) -> Step:
    host = facts.host
    missing = sorted(p for p in packages if not facts.installed(p))
    if not missing:
        return NoChange(host, phase, "packages", f"installed: {', '.join(sorted(packages))}")
    return Change(
        host, phase, "packages", f"install {', '.join(missing)}", why,
        (Run(install_command.replace("__PKGS__", " ".join(missing)), f"install {' '.join(missing)}"),),
    )


def sysctl_steps(
    facts: HostFacts, phase: str, wanted: dict[str, str], why: dict[str, str],
    appearing: Iterable[str] = (),
) -> list[Step]:
    """Set live values now and read them back; a read-only key becomes a warning.

    `appearing` are key prefixes that this plan makes exist (e.g. `net.bridge.` once it loads
    br_netfilter): they are set after the module load instead of being reported missing.
    """
    host = facts.host
    out: list[Step] = []
    cmd: Script
    for key in sorted(wanted):
        value = wanted[key]
        st = facts.sysctls.get(key)
        res = f"sysctl {key}"
        if (st is None or st.value is None) and any(key.startswith(p) for p in appearing):
            cmd = Cmd("sysctl", "-q", "-w", f"{key}={value}")
            out.append(Change(host, phase, res, f"set {key} = {value} (after loading its module)",
                              why.get(key, "required by Kubernetes networking"), (run(cmd),)))
            continue
        if st is None or st.value is None:
            out.append(NoChange(host, phase, res, f"{key} does not exist on this kernel; not set", warning=True))
            continue
        if _norm(st.value) == _norm(value):
            out.append(NoChange(host, phase, res, f"{key} = {st.value}"))
            continue
        if not st.writable:
            out.append(NoChange(
                host, phase, res,
                f"{key} cannot be set on this host (read-only, e.g. in a container); "
                f"current value {st.value}, wanted {value}",
                warning=True,
            ))
            continue
        path = "/proc/sys/" + key.replace(".", "/")
        # the message is one quoted word with the read-back value spliced in as "$v": a
        # value from cluster.yaml is never shell syntax, however it is spelled
        said = quote(f"{key} reads back as ") + '"$v"' + quote(f" after setting {value}")
        cmd = (Cmd("sysctl", "-q", "-w", f"{key}={value}")
               & sh(f'v=$(tr "\\t" " " < {quote(path)})')
               & Cmd("test", Raw('"$v"'), "=", _norm(value)).or_(
                   sh(f"{{ echo {said} >&2; exit 1; }}")))
        out.append(Change(
            host, phase, res, f"set {key} = {value} (now {st.value})",
            why.get(key, "required by Kubernetes networking"),
            (run(cmd, f"set and verify {key}"),),
        ))
    return out


def _norm(v: str) -> str:
    return " ".join(v.split())
