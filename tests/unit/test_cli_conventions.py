"""Command-line conventions and config friendliness that need no host: --version, shell
completion, -c and HOMEKUBE_CONFIG, validate, DNS-name addresses, integer sysctls, "did you
mean", init --host, the run log's redaction, and the progress lines without a terminal.

The CLI runs in a subprocess, as a user would start it."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from homekube import __version__
from homekube.config.loader import load_text
from homekube.errors import ConfigError
from tests.conftest import GOOD


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "homekube", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, "COLUMNS": "80", **(env or {})})


# ------------------------------------------------------------------ version, completion


def test_version_flag_and_json() -> None:
    for flag in ("--version", "-V"):
        res = cli(flag)
        assert res.returncode == 0 and res.stdout == f"homekube {__version__}\n", res
    res = cli("version", "-o", "json")
    data = json.loads(res.stdout)
    assert data["version"] == __version__ and data["libraries"]["asyncssh"]
    assert cli("version", "-o", "yaml").returncode == 2


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    res = cli("completion", shell)
    assert res.returncode == 0, res.stderr
    assert f"_HOMEKUBE_COMPLETE=complete_{shell}" in res.stdout  # what the script asks homekube for


def test_completion_answers_like_the_script_asks() -> None:
    """What `source <(homekube completion bash)` makes bash run on <TAB>."""
    env = {"_HOMEKUBE_COMPLETE": "complete_bash", "COMP_WORDS": "homekube pl", "COMP_CWORD": "1"}
    res = cli(env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["plan"]
    env = {"_HOMEKUBE_COMPLETE": "complete_bash", "COMP_WORDS": "homekube apply --st", "COMP_CWORD": "2"}
    assert cli(env=env).stdout.split() == ["--step-timeout"]
    env = {"_HOMEKUBE_COMPLETE": "complete_bash", "COMP_WORDS": "homekube lab ", "COMP_CWORD": "2"}
    assert {"up", "down", "status"} <= set(cli(env=env).stdout.split())
    assert cli("completion", "powershell").returncode == 2


def test_help_has_no_type_labels_and_fits_80_columns() -> None:
    for args in (("-h",), ("apply", "-h"), ("reset", "--help"), ("lab", "up", "-h"), ("certs", "renew", "-h")):
        res = cli(*args)
        assert res.returncode == 0, (args, res.stderr)
        assert "<bool>" not in res.stdout and "<str>" not in res.stdout, res.stdout
        assert max(len(ln) for ln in res.stdout.splitlines()) <= 80, res.stdout


# ------------------------------------------------------------------ -c, HOMEKUBE_CONFIG, validate


def test_config_from_flag_env_and_default(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD + "colour: blue\n")
    res = cli("validate", env={"HOMEKUBE_CONFIG": str(good)})
    assert res.returncode == 0 and "good.yaml: valid; cluster krusty, 2 host(s)" in res.stdout, res
    # -c wins over the environment
    res = cli("validate", "-c", str(bad), env={"HOMEKUBE_CONFIG": str(good)})
    assert res.returncode == 2 and "bad.yaml:13:1: colour: unknown key" in res.stderr, res.stderr
    res = cli("validate", "--config", str(good), "-o", "json")
    assert json.loads(res.stdout) == {"valid": True, "cluster": "krusty", "hosts": 2,
                                      "roles": {"control-plane": 1, "etcd": 1, "worker": 2}}
    (tmp_path / "cluster.yaml").write_text(GOOD)
    assert cli("validate", cwd=tmp_path, env={"HOMEKUBE_CONFIG": ""}).returncode == 0


def test_kubeconfig_o_is_no_longer_a_file(tmp_path: Path) -> None:
    res = cli("kubeconfig", "-o", str(tmp_path / "kc"))
    assert res.returncode == 2 and "No such option: -o" in res.stderr


# ------------------------------------------------------------------ config friendliness


def test_unknown_key_says_did_you_mean_and_points_at_the_key() -> None:
    text = GOOD.replace("ssh: {user: root,", "ssh: {usr: root,").replace(
        "ui: {kind", "hostprep: {swap: 'off'}\nui: {kind")
    with pytest.raises(ConfigError) as e:
        load_text(text, "c.yaml")
    msgs = [str(p) for p in e.value.problems]
    line_hp = text.splitlines().index("hostprep: {swap: 'off'}") + 1
    assert f"c.yaml:{line_hp}:1: hostprep: unknown key; did you mean 'hostPrep'?" in msgs, msgs
    ssh_line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("ssh:"))
    col = text.splitlines()[ssh_line - 1].index("usr") + 1
    assert f"c.yaml:{ssh_line}:{col}: ssh.usr: unknown key; did you mean 'user'?" in msgs, msgs
    with pytest.raises(ConfigError) as e:
        load_text(GOOD + "zzzz: 1\n")
    assert str(e.value.problems[0]).endswith("zzzz: unknown key")  # nothing close: no guess


def test_sysctl_values_may_be_numbers() -> None:
    cfg = load_text(GOOD + "hostPrep: {sysctls: {net.ipv4.ip_forward: 1, vm.overcommit_ratio: 50, "
                           "net.core.somaxconn: '4096'}}\n")
    assert cfg.host_prep.sysctls == {"net.ipv4.ip_forward": "1", "vm.overcommit_ratio": "50",
                                     "net.core.somaxconn": "4096"}
    with pytest.raises(ConfigError) as e:
        load_text(GOOD + "hostPrep: {sysctls: {net.ipv4.ip_forward: true}}\n")
    assert "write 1 or 0" in str(e.value)


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(name: str) -> list[str]:
        if name not in table:
            raise LookupError("Name or service not known")
        return table[name]
    return resolve


def test_dns_names_resolve_to_addresses_and_ssh_keeps_the_name() -> None:
    from homekube.ops.session import ssh_target

    text = GOOD.replace("address: 192.0.2.54", "address: krusty.home.arpa").replace(
        'address6: "2001:db8::55"', "address6: bart.home.arpa")
    cfg = load_text(text, resolve=resolver({"krusty.home.arpa": ["192.0.2.54", "2001:db8::54"],
                                            "bart.home.arpa": ["192.0.2.55", "2001:db8::55"]}))
    k, b = cfg.hosts
    assert str(k.address) == "192.0.2.54" and k.dns_name == "krusty.home.arpa"
    assert str(b.address6) == "2001:db8::55" and b.dns_name is None
    t = ssh_target(cfg, k)
    assert t.host == "krusty.home.arpa" and t.user == "root" and t.port == 22
    assert ssh_target(cfg, b).host == "192.0.2.55"
    # certificates and kubeadm see the address, as with an IP in the file
    assert cfg.model_dump() == load_text(GOOD).model_dump()


def test_a_name_that_does_not_resolve_is_named_with_its_place() -> None:
    text = GOOD.replace("address: 192.0.2.55", "address: nosuch.home.arpa")
    with pytest.raises(ConfigError) as e:
        load_text(text, "c.yaml", resolve=resolver({}))
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "nosuch" in ln)
    col = text.splitlines()[line - 1].index("nosuch") + 1
    assert [str(p) for p in e.value.problems] == [
        f"c.yaml:{line}:{col}: hosts[1].address: the DNS name 'nosuch.home.arpa' does not resolve "
        "(Name or service not known)"]
    with pytest.raises(ConfigError) as e:
        load_text(GOOD.replace("address: 192.0.2.55", "address: 10.0.0.300"), resolve=resolver({}))
    assert "'10.0.0.300' is not a valid IP address" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_text(GOOD.replace("address: 192.0.2.55", "address: -bad-.lan"), resolve=resolver({}))
    assert "neither an IP address nor a DNS name" in str(e.value)


def test_init_takes_names_and_refuses_garbage_without_a_traceback() -> None:
    res = cli("init", "--host", "server1.lan", "--host", "192.0.2.11")
    assert res.returncode == 0, res.stderr
    assert '{name: server1, address: "server1.lan"' in res.stdout
    assert '{name: node2, address: "192.0.2.11"' in res.stdout
    for bad in ("10.0.0.300", "not a host", "x" * 300):
        res = cli("init", "--host", bad)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith("error: --host "), res.stderr
    assert cli("init", "--name", "Bad Name").returncode == 2


def test_validate_resolves_names_on_this_machine(tmp_path: Path) -> None:
    """Real resolution (getaddrinfo): `localhost` resolves, and is then refused as loopback."""
    p = tmp_path / "c.yaml"
    p.write_text(GOOD.replace("address: 192.0.2.55", "address: localhost"))
    res = cli("validate", "-c", str(p))
    assert res.returncode == 2
    assert re.search(r"c\.yaml:\d+:\d+: hosts\[1\]\.address: (127\.0\.0\.1|::1) cannot be a node address",
                     res.stderr), res.stderr


# ------------------------------------------------------------------ run log, progress lines


def test_run_log_is_private_and_redacted(tmp_path: Path) -> None:
    from homekube.executor import Event
    from homekube.runlog import RunLog, redact

    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----"
    token = "abcdef.0123456789abcdef"
    assert redact(f"x {key} y") == "x <private key> y"
    assert redact(f"kubeadm join --token {token}") == "kubeadm join --token <bootstrap token>"
    assert "0123" not in redact("--certificate-key " + "ab" * 32)
    rl = RunLog(tmp_path / "state", "apply", ["apply", "-c", "x.yaml"])
    assert not rl.opened and not rl.path.exists()  # a run that changed nothing leaves no log
    with rl:
        rl.event(Event("phase", text="Host preparation"))
        rl.event(Event("output", "h1", "p", "s", f"token {token} and {key}"))
        rl.event(Event("fail", "h1", "p", "install", "timed out after 20 s"))
    text = rl.path.read_text()
    assert token not in text and "PRIVATE KEY" not in text and "<bootstrap token>" in text
    assert "h1: FAILED: install: timed out after 20 s" in text and text.rstrip().endswith(" s")
    assert stat.S_IMODE(rl.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(rl.path.parent.stat().st_mode) == 0o700


def test_progress_without_a_terminal_is_timestamped_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import homekube.cli.progress as pr
    from homekube.executor import Event

    buf = io.StringIO()
    with pr.ProgressView(stream=buf, live=False) as view:
        view.event(Event("phase", text="Host preparation"))
        view.event(Event("start", "h2", "p", "install socat"))
        view.event(Event("done", "h2", "p", "install socat", seconds=3.25))
        view.event(Event("fail", "h3", "p", "install socat", "timed out after 20 s"))
    lines = buf.getvalue().splitlines()
    assert [re.sub(r"^\d\d:\d\d:\d\d ", "", ln) for ln in lines] == [
        "Host preparation", "  ✓ h2: install socat (3.2s)", "  ✗ h3: install socat: timed out after 20 s"]
    assert all(re.match(r"\d\d:\d\d:\d\d ", ln) for ln in lines)
    assert "\x1b[" not in buf.getvalue()
    quiet = io.StringIO()
    with pr.ProgressView(stream=quiet, quiet=True) as view:
        view.event(Event("phase", text="Host preparation"))
    assert quiet.getvalue() == ""


def test_the_live_panel_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    import homekube.cli.progress as pr
    from homekube.executor import Event

    def panel() -> str:
        buf = io.StringIO()
        with pr.ProgressView(stream=buf, live=True) as view:
            view.event(Event("phase", text="Host preparation"))
            view.event(Event("start", "h2", "p", "install socat"))
            view.event(Event("done", "h2", "p", "install socat", seconds=1.0))
            view.event(Event("end"))
        return buf.getvalue()

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[32m" in panel()  # the ✓ line is green on a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    text = panel()
    assert "✓ h2: install socat (1.0s)" in text
    assert not re.search(r"\x1b\[(\d+;)*3\dm", text), repr(text)  # no colour, only cursor moves
