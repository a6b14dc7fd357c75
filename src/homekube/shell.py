"""Shell commands built from parts and quoted structurally, never by pasting strings (pure).

    Cmd("install", "-d", "-m", "0755", path)    one simple command; every word is quoted
    a & b    a | b    a.or_(b)    lines(a, b)    `&&`, pipe, `||`, one per line
    Raw("$d/bin")                              shell syntax passed as is (the caller vouches)
    Secret(token, "join token")                the real word on the host, `<join token>` in
                                               plans and logs

A `Script` renders twice: `text` is what the host runs, `shown` is what a plan or a log may
print (every `Secret` masked, nothing else changed). `str()` is `shown`, so a secret pasted
into an f-string by mistake fails on the host instead of leaking into a log.

Compound parts are braced (`{ ...; }`) where the shell's precedence would otherwise regroup
them, so `(a & b).or_(c)` is `a && b || c` but `a & b.or_(c)` is `a && { b || c; }`.

The idioms every planner repeats have one spelling here: `poll_until`, `retry_while`,
`install_dir`, `fetch`, `fetch_signing_key`. Long host-side programs live as package-data
`.sh` files under `homekube/scripts/` (checked by shellcheck in the test command) and are
read with `script()`.
"""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "Cmd",
    "Raw",
    "Script",
    "Secret",
    "Word",
    "assign",
    "fetch",
    "fetch_signing_key",
    "install_dir",
    "lines",
    "poll_until",
    "quote",
    "quote_always",
    "retry_while",
    "script",
    "sh",
    "when",
    "words",
]

# precedence, loosest first: a part looser than its place is braced
_LIST, _ANDOR, _PIPE, _SIMPLE = range(4)


def quote(word: str) -> str:
    """One shell word: bare when it is plainly safe, else single-quoted (`shlex.quote`)."""
    return shlex.quote(word)


def quote_always(word: str) -> str:
    """One shell word, always single-quoted (how homekube has quoted paths in plans)."""
    return "'" + word.replace("'", "'\"'\"'") + "'"


def words(items: Iterable[str]) -> str:
    """Several words, each always single-quoted (for a `for x in ...` list)."""
    return " ".join(quote_always(i) for i in items)


@dataclass(frozen=True)
class Secret:
    """A word the host must see but a plan or a log must not (a token, a key, a password)."""

    value: str
    name: str = "secret"

    def __repr__(self) -> str:
        return f"Secret(<{self.name}>)"


@dataclass(frozen=True)
class Raw:
    """Shell syntax used verbatim: an expansion ("$d/x"), a redirection, a test. One unit."""

    text: str


Word = str | Secret | Raw


def _word(w: Word, reveal: bool) -> str:
    if isinstance(w, Raw):
        return w.text
    if isinstance(w, Secret):
        return quote(w.value) if reveal else f"<{w.name}>"
    return quote(w)


class Script(ABC):
    """A piece of shell: one command, or commands joined by operators."""

    @property
    def prec(self) -> int:
        """How tightly it binds: a part looser than its place is braced."""
        return _SIMPLE

    @abstractmethod
    def render(self, reveal: bool) -> str:
        """The shell text; with `reveal` False every Secret is masked."""

    @property
    def secret(self) -> bool:
        return False

    @property
    def text(self) -> str:
        """What the host runs."""
        return self.render(True)

    @property
    def shown(self) -> str:
        """What a plan or a log shows: the command with its secrets masked."""
        return self.render(False)

    def __str__(self) -> str:
        return self.shown

    def __and__(self, other: Script) -> Script:
        return _Join(_ANDOR, " && ", (self, other))

    def __or__(self, other: Script) -> Script:
        return _Join(_PIPE, " | ", (self, other))

    def or_(self, other: Script) -> Script:
        """`self || other`."""
        return _Join(_ANDOR, " || ", (self, other))

    def or_true(self) -> Script:
        """Run it; its failure is not the script's (`|| true`)."""
        return self.or_(Cmd("true"))

    def redirect(self, *ops: str) -> Script:
        """Append redirections (e.g. ">/dev/null", "2>&1"), given as shell syntax."""
        return _Redirect(self, tuple(ops))

    def quiet(self) -> Script:
        """Discard stdout and stderr."""
        return self.redirect(">/dev/null", "2>&1")

    def to_stderr(self) -> Script:
        return self.redirect(">&2")


def _part(s: Script, prec: int, reveal: bool) -> str:
    """`s` rendered for a place of precedence `prec`: braced when it binds looser."""
    body = s.render(reveal)
    if s.prec >= prec:
        return body
    return "{\n" + body + "\n}" if "\n" in body else "{ " + body + "; }"


@dataclass(frozen=True, init=False)
class Cmd(Script):
    """One simple command: its words, each quoted on its own."""

    argv: tuple[Word, ...]

    def __init__(self, *argv: Word) -> None:
        if not argv:
            raise ValueError("a command needs at least one word")
        object.__setattr__(self, "argv", tuple(argv))

    def render(self, reveal: bool) -> str:
        return " ".join(_word(w, reveal) for w in self.argv)

    @property
    def secret(self) -> bool:
        return any(isinstance(w, Secret) for w in self.argv)

    def __add__(self, more: Sequence[Word]) -> Cmd:
        return Cmd(*self.argv, *more)


@dataclass(frozen=True)
class _Join(Script):
    level: int
    sep: str
    parts: tuple[Script, ...]

    @property
    def prec(self) -> int:
        return self.level

    def render(self, reveal: bool) -> str:
        # left-associative operators: the left part may be as loose as the operator itself,
        # the right part must bind tighter, or the shell regroups it
        out = [_part(self.parts[0], self.prec, reveal)]
        out += [_part(p, self.level + 1 if self.level != _LIST else _LIST, reveal)
                for p in self.parts[1:]]
        return self.sep.join(out)

    @property
    def secret(self) -> bool:
        return any(p.secret for p in self.parts)


@dataclass(frozen=True)
class _Redirect(Script):
    inner: Script
    ops: tuple[str, ...]

    def render(self, reveal: bool) -> str:
        return _part(self.inner, _SIMPLE, reveal) + " " + " ".join(self.ops)

    @property
    def secret(self) -> bool:
        return self.inner.secret


@dataclass(frozen=True)
class _Concat(Script):
    """Hand-written shell text with Scripts in its holes (each placed at a given precedence)."""

    segments: tuple[str | tuple[Script, int], ...]
    level: int = _SIMPLE

    @property
    def prec(self) -> int:
        return self.level

    def render(self, reveal: bool) -> str:
        return "".join(s if isinstance(s, str) else _part(s[0], s[1], reveal) for s in self.segments)

    @property
    def secret(self) -> bool:
        return any(not isinstance(s, str) and s[0].secret for s in self.segments)


def sh(text: str, *, compound: bool = False) -> Script:
    """Shell text written by hand (a test like `[ -S /run/x.sock ]`), as a Script.

    `compound` when it holds operators or several commands, so that it is braced where
    needed. Quoting inside `text` is the caller's: use `Cmd` for anything built from values.
    """
    return _Concat((text,), _LIST if compound else _SIMPLE)


def when(condition: Script, *then: Script) -> Script:
    """`if condition; then ...; fi`: the commands run only when it holds, and its being false
    is no failure (unlike `condition && ...` as a script's last line)."""
    segs: list[str | tuple[Script, int]] = ["if ", (condition, _ANDOR), "; then "]
    for t in then:
        segs += [(t, _ANDOR), "; "]
    segs.append("fi")
    return _Concat(tuple(segs), _SIMPLE)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def assign(name: str, value: Word) -> Script:
    """`name=value`, the value one word (how a Python setting reaches a shipped script)."""
    if not _IDENT.fullmatch(name):
        raise ValueError(f"not a shell variable name: {name!r}")
    return _Concat((f"{name}=", (Cmd(value), _SIMPLE)), _SIMPLE)


def lines(*parts: Script) -> Script:
    """Commands one after the other, one per line (under `set -e` each must succeed)."""
    return _Join(_LIST, "\n", parts)


# ---------------------------------------------------------------------------------------------
# idioms


def install_dir(path: str | Raw, mode: int = 0o755, owner: str | None = None,
                group: str | None = None) -> Cmd:
    """`install -d`: create a directory with its mode (and owner), or fix an existing one's."""
    who: list[Word] = []
    if owner is not None:
        who += ["-o", owner]
    if group is not None:
        who += ["-g", group]
    return Cmd("install", "-d", "-m", f"{mode:04o}", *who, path)


def fetch(url: str, dest: str | Raw) -> Cmd:
    """Download `url` to `dest`: fail on HTTP errors, follow redirects, retry a flaky link."""
    return Cmd("curl", "-fsSL", "--retry", "3", "-o", dest, url)


def fetch_signing_key(url: str, keyring: str) -> Script:
    """Store a repository's signing key dearmored at `keyring` (apt's `signed-by=`), atomically."""
    tmp = keyring + ".tmp"
    d = keyring.rsplit("/", 1)[0] or "/"
    return (install_dir(d)
            & (Cmd("curl", "-fsSL", "--retry", "3", url) | Cmd("gpg", "--dearmor", "--yes", "-o", tmp))
            & Cmd("chmod", "0644", tmp) & Cmd("mv", "-f", tmp, keyring))


def _say(message: str) -> Script:
    return Cmd("echo", message).to_stderr()


def _seconds(s: float) -> str:
    return f"{s:g}"


def poll_until(condition: Script, *, seconds: int, every: float = 0.2, failure: str,
               give_up_if: Script | None = None, diagnose: Sequence[Script] = ()) -> Script:
    """Poll `condition` every `every` s for up to `seconds` s; never a fixed sleep.

    On the deadline (or as soon as `give_up_if` holds, e.g. the unit failed) print `failure`
    and what `diagnose` prints, all on stderr, and fail. Deadlines count wall time
    (`$SECONDS`), not attempts, so a slow condition does not stretch the wait.
    """
    stop = sh('[ "$SECONDS" -ge "$hk_end" ]')
    give_up = stop if give_up_if is None else stop.or_(give_up_if)
    fail = [_say(failure), *(d.or_true() for d in diagnose), Cmd("exit", "1")]
    segs: list[str | tuple[Script, int]] = [
        f"hk_end=$((SECONDS + {seconds})); until ", (condition, _ANDOR), "; do if ", (give_up, _ANDOR),
        "; then "]
    for f in fail:
        segs += [(f, _ANDOR), "; "]
    segs.append(f"fi; sleep {_seconds(every)}; done")
    return _Concat(tuple(segs), _LIST)


def _glob_literal(s: str) -> str:
    """`s` as a quoted literal inside a `case` pattern (`*'text'*`)."""
    return quote_always(s)


def retry_while(command: Script, *, transient: Sequence[str], seconds: int, every: float = 0.5,
                done_if: Sequence[str] = ()) -> Script:
    """Run `command` until it succeeds, retrying while its output says the failure is transient.

    `transient` and `done_if` are texts its output may contain: a transient one retries (for
    up to `seconds` s), a `done_if` one counts as success (an earlier attempt that timed out
    on the client but was applied), anything else fails at once with the output on stderr.
    """
    if not transient:
        raise ValueError("retry_while needs at least one transient message")
    cases = []
    if done_if:
        cases.append("|".join(f"*{_glob_literal(m)}*" for m in done_if) + ") break;;")
    cases.append("|".join(f"*{_glob_literal(m)}*" for m in transient) + ") ;;")
    cases.append('*) echo "$hk_out" >&2; exit 1;;')
    return _Concat((
        f"hk_end=$((SECONDS + {seconds})); while :; do hk_out=$(", (command, _SIMPLE),
        f" 2>&1) && break; case $hk_out in {' '.join(cases)} esac; "
        '[ "$SECONDS" -lt "$hk_end" ] || { echo "$hk_out" >&2; exit 1; }; '
        f"sleep {_seconds(every)}; done",
    ), _LIST)


# ---------------------------------------------------------------------------------------------
# package-data programs

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\.sh")


@cache
def script(name: str) -> str:
    """The text of the shipped program `homekube/scripts/<name>` (shellcheck-clean)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a script name: {name!r}")
    return (resources.files("homekube") / "scripts" / name).read_text(encoding="utf-8")
