"""homekube.shell: words survive bash exactly, operators group as written, secrets stay masked."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homekube import shell
from homekube.shell import Cmd, Raw, Secret, install_dir, lines, poll_until, retry_while, sh

# bash cannot carry NUL in an argument, and a lone surrogate is no UTF-8; everything else
# must come through unchanged
WORD = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40)


def bash(text: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=timeout,
                          check=False)


def argv_of(text: str) -> list[str]:
    """What bash passes as arguments for `text` (a command line whose first word is ignored)."""
    out = subprocess.run(["bash", "-c", f"set -- {text}; shift; printf '%s\\0' \"$@\""],
                         capture_output=True, timeout=20, check=True).stdout
    return [w.decode("utf-8", "surrogateescape") for w in out.split(b"\0")[:-1]]


@settings(max_examples=60, deadline=None)
@given(st.lists(WORD, min_size=1, max_size=5))
def test_every_word_round_trips_through_bash(ws: list[str]) -> None:
    assert argv_of(Cmd("x", *ws).text) == ws


@settings(max_examples=40, deadline=None)
@given(WORD)
def test_quote_always_round_trips_and_always_quotes(w: str) -> None:
    q = shell.quote_always(w)
    assert q.startswith("'")
    assert argv_of("x " + q) == [w]


@settings(max_examples=30, deadline=None)
@given(WORD, WORD)
def test_a_secret_is_real_on_the_host_and_masked_when_shown(public: str, secret: str) -> None:
    c = Cmd("x", public, Secret(secret, "join token"))
    assert argv_of(c.text) == [public, secret]
    assert c.shown == Cmd("x", public).shown + " <join token>"
    assert str(c) == c.shown and c.secret
    assert not Cmd("x", public).secret
    # masking survives composition
    assert "<join token>" in (Cmd("a") & c).or_(Cmd("b")).shown
    assert (Cmd("a") & c).secret


def test_operators_group_like_the_python_expression() -> None:
    a, b, c = Cmd("a"), Cmd("b"), Cmd("c")
    assert (a & b).or_(c).text == "a && b || c"
    assert (a & b.or_(c)).text == "a && { b || c; }"
    assert (a & b | c).text == "{ a && b; } | c"  # Python's & binds tighter than |
    assert (a & (b | c)).text == "a && b | c"
    assert (a | b).quiet().text == "{ a | b; } >/dev/null 2>&1"
    assert a.quiet().text == "a >/dev/null 2>&1"
    assert lines(a, b & c).text == "a\nb && c"
    assert (a & lines(b, c)).text == "a && {\nb\nc\n}"


@pytest.mark.parametrize(("expr", "out", "rc"), [
    ((Cmd("false") & Cmd("echo", "x")).or_(Cmd("echo", "y")), "y\n", 0),
    (Cmd("false") & Cmd("echo", "x").or_(Cmd("echo", "y")), "", 1),
    (Cmd("true") & (Cmd("echo", "a b") | Cmd("tr", "a", "z")), "z b\n", 0),
])
def test_bash_agrees_with_the_structure(expr: shell.Script, out: str, rc: int) -> None:
    r = bash(expr.text)
    assert (r.stdout, r.returncode) == (out, rc)


def test_raw_words_are_not_quoted() -> None:
    assert Cmd("tar", "-C", Raw('"$d"'), "-xf", "a b").text == "tar -C \"$d\" -xf 'a b'"


def test_install_dir() -> None:
    assert install_dir("/etc/x y", 0o700, "etcd", "etcd").text == "install -d -m 0700 -o etcd -g etcd '/etc/x y'"
    assert install_dir("/etc/x").text == "install -d -m 0755 /etc/x"


def test_poll_until_succeeds_once_the_condition_holds() -> None:
    r = bash("n=0; " + poll_until(sh('n=$((n + 1)); [ "$n" -ge 3 ]', compound=True),
                                  seconds=10, every=0.01, failure="never").text + "; echo ok $n")
    assert r.returncode == 0 and r.stdout == "ok 3\n"


def test_poll_until_gives_up_with_its_message_and_diagnosis() -> None:
    p = poll_until(Cmd("false"), seconds=0, every=0.01, failure="x not ready after 0s",
                   diagnose=[Cmd("echo", "journal").to_stderr(), Cmd("false")])
    r = bash(p.text + "; echo unreachable")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "x not ready after 0s\njournal\n"
    r = bash(poll_until(Cmd("false"), seconds=60, every=0.01, failure="failed early",
                        give_up_if=Cmd("true")).text)
    assert r.returncode == 1 and r.stderr == "failed early\n"


def test_retry_while_retries_transient_failures_only(tmp_path: Path) -> None:
    # the command runs in $( ), a subshell: it counts its attempts in a file
    flaky = sh('echo x >> "$f"; [ "$(wc -l < "$f")" -ge 3 ] || { echo "etcdserver: unhealthy cluster"; false; }',
               compound=True)
    r = bash(f'f={tmp_path}/n; ' + retry_while(flaky, transient=["unhealthy cluster"], seconds=10, every=0.01).text
             + '; echo ok "$(wc -l < "$f")"')
    assert r.returncode == 0 and r.stdout == "ok 3\n"
    r = bash(f'f={tmp_path}/m; ' + retry_while(flaky, transient=["unhealthy cluster"], seconds=0, every=0.01).text)
    assert r.returncode == 1 and "unhealthy cluster" in r.stderr
    hard = sh("echo 'permission denied'; false", compound=True)
    r = bash(retry_while(hard, transient=["unhealthy cluster"], seconds=10).text + "; echo no")
    assert r.returncode == 1 and r.stderr == "permission denied\n"
    taken = sh("echo \"Peer URLs already exists\"; false", compound=True)
    r = bash(retry_while(taken, transient=["x"], done_if=["Peer URLs already exists"], seconds=10).text
             + "; echo done")
    assert r.returncode == 0 and r.stdout == "done\n"


def test_fetch_signing_key_is_atomic_and_quoted() -> None:
    t = shell.fetch_signing_key("https://example.org/a key", "/etc/apt/keyrings/k.gpg").text
    assert t == ("install -d -m 0755 /etc/apt/keyrings && curl -fsSL --retry 3 'https://example.org/a key' | "
                 "gpg --dearmor --yes -o /etc/apt/keyrings/k.gpg.tmp && chmod 0644 /etc/apt/keyrings/k.gpg.tmp "
                 "&& mv -f /etc/apt/keyrings/k.gpg.tmp /etc/apt/keyrings/k.gpg")


def test_every_shipped_script_loads_and_is_named_sanely() -> None:
    names = sorted(p.name for p in (resources.files("homekube") / "scripts").iterdir()
                   if p.name.endswith(".sh"))
    assert names, "no scripts shipped"
    for n in names:
        # a library names its shell for shellcheck; a program written to a host has its #!
        assert shell.script(n).startswith(("# shellcheck shell=bash\n", "#!/bin/sh\n", "#!/bin/bash\n")), n
    with pytest.raises(ValueError):
        shell.script("../errors.py")
