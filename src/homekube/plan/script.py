"""Turn a host's Changes into one bash script (pure), so a phase costs one exec per host.

The body is wrapped in a function that is only called on the last line: if the connection
drops while the script is still being sent, bash never runs a partial script. Files are
written to a temp file in the target directory, checked against their SHA-256, then renamed,
so an interrupted upload never leaves a half-written file behind. A temp file is removed when
the script stops early (error, hang-up, broken pipe of a killed operator run), and any stale
one beside a target is swept before the next write there: the host lock guarantees no other
homekube is writing, so such a file can only be left from an earlier run.

Every command (a `Run`) runs under coreutils `timeout` in its own process group, so a hung
step is ended on the host with everything it started (apt-get's download methods, dpkg), not
just abandoned by the operator. Its text reaches that bash on a file descriptor (a here-doc),
never in argv, so a secret in it never shows in a process list. While it runs, its process
group, start and label sit in STEP_RECORD: when this script is stopped (its operator went
away, see transport.base.watched) the record says which group to kill, and the next run's
lock can tell an orphaned step from a live one.

Marker lines tell the operator where the script is while it runs (`Change` i started, Run j
of it started with its timeout, a Run timed out, all done); the executor streams them into
progress events.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from homekube.facts.base import shell_quote
from homekube.plan.model import Change, LocalWrite, Run, WriteFile
from homekube.shell import Cmd, assign, lines, script

STEP_MARK = "@@homekube-step@@"
#: the step that runs now: "<pgid> <start ticks> <script pid> <since> <label>"
STEP_RECORD = "/run/homekube.step"
#: seconds between the TERM and the KILL sent to a step's process group
KILL_GRACE = 10

TimeoutOf = Callable[[Run], float]


def _default_timeout(_: Run) -> float:
    return 300


def _write(a: WriteFile) -> str:
    d = a.path.rsplit("/", 1)[0] or "/"
    b64 = base64.encodebytes(a.content).decode()
    p = shell_quote(a.path)
    return (
        f"[ -d {shell_quote(d)} ] || install -d -m 0755 {shell_quote(d)}\n"
        f"rm -f -- {shell_quote(d)}/.homekube.??????\n"
        f"t=$(mktemp {shell_quote(d + '/.homekube.XXXXXX')})\n"
        f"base64 -d > \"$t\" <<'HOMEKUBE_EOF'\n{b64}HOMEKUBE_EOF\n"
        f'if [ "$(sha256sum < "$t" | cut -d" " -f1)" != {a.sha256} ]; then '
        f'rm -f "$t"; {Cmd("echo", f"upload of {a.path} is incomplete").to_stderr()}; exit 1; fi\n'
        f'chown {shell_quote(a.owner + ":" + a.group)} "$t" && chmod {a.mode:04o} "$t" && '
        f'mv -f "$t" {p}; t=\n'
    )


def _delimiter(body: str) -> str:
    """A here-doc delimiter that cannot occur as a line of `body` (derived from its hash)."""
    salt = 0
    while True:
        d = "HOMEKUBE_STEP_" + hashlib.sha256(f"{salt}:{body}".encode()).hexdigest()[:16]
        if d not in body.splitlines():
            return d
        salt += 1


def _run(a: Run, i: int, j: int, seconds: float) -> str:
    body = f"set -euo pipefail\n{a.command}\n"
    d = _delimiter(body)
    secs = max(1, round(seconds))
    return (f"printf '%s run %d %d %d\\n' '{STEP_MARK}' {i} {j} {secs}\n"
            f"hk_step {secs} {i} {j} {shell_quote(a.label())} {'secret' if a.secret else 'shown'} "
            f"3<<'{d}'\n{body}{d}\n")


def _helpers() -> str:
    """hk_step, hk_watch and hk_stop (homekube/scripts/step.sh) with their settings."""
    return f"{lines(assign('hk_mark', STEP_MARK), assign('hk_grace', str(KILL_GRACE))).text}\n{script('step.sh')}"


def render(changes: list[Change], timeout_of: TimeoutOf = _default_timeout, *,
           record: str | None = None) -> str:
    """One script for all of a host's changes in a wave; prints a marker before each.

    `record` replaces STEP_RECORD (tests run scripts on the machine they run on)."""
    body: list[str] = []
    for i, c in enumerate(changes):
        body.append(f"printf '%s %d\\n' '{STEP_MARK}' {i}")
        for j, a in enumerate(c.actions):
            if isinstance(a, WriteFile):
                body.append(_write(a))
            elif isinstance(a, Run):
                body.append(_run(a, i, j, timeout_of(a)))
            elif isinstance(a, LocalWrite):
                continue  # done on the operator machine by the executor
    inner = "\n".join(body)
    return (
        "homekube_main() {\n"
        "set -eo pipefail\n"
        "umask 077\n"
        "t=\n"
        f"hk_record={shell_quote(record or STEP_RECORD)}\n"
        f"{_helpers()}"
        'trap \'[ -z "$t" ] || rm -f -- "$t"\' EXIT\n'
        "trap 'hk_stop; exit 129' HUP PIPE TERM INT\n"
        "export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{inner}\n"
        f"printf '%s done\\n' '{STEP_MARK}'\n"
        "}\n"
        "homekube_main\n"
    )


@dataclass(frozen=True)
class Mark:
    """One marker line: a Change started (`run` None), a Run started, a Run timed out, or done."""

    kind: str  # "change" | "run" | "timeout" | "done"
    change: int = 0
    action: int = 0
    seconds: int = 0


def parse_mark(line: str) -> Mark | None:
    """The marker on `line`, or None for ordinary output."""
    if not line.startswith(STEP_MARK + " "):
        return None
    words = line[len(STEP_MARK) + 1 :].split()
    try:
        if words == ["done"]:
            return Mark("done")
        if len(words) == 1:
            return Mark("change", int(words[0]))
        if len(words) == 4 and words[0] in ("run", "timeout"):
            return Mark(words[0], int(words[1]), int(words[2]), int(words[3]))
    except ValueError:
        return None
    return None


def failed_step(stdout: str) -> int | None:
    """Index of the step that was running when the script stopped (None if it finished)."""
    last: int | None = None
    for line in stdout.splitlines():
        m = parse_mark(line)
        if m is None:
            continue
        if m.kind == "done":
            return None
        last = m.change
    return last if last is not None else 0


def strip_marks(stdout: str) -> str:
    return "\n".join(ln for ln in stdout.splitlines() if not ln.startswith(STEP_MARK))
