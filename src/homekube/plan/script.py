"""Turn a host's Changes into one bash script (pure), so a phase costs one exec per host.

The body is wrapped in a function that is only called on the last line: if the connection
drops while the script is still being sent, bash never runs a partial script. Files are
written to a temp file in the target directory, checked against their SHA-256, then renamed,
so an interrupted upload never leaves a half-written file behind. A temp file is removed when
the script stops early (error, hang-up, broken pipe of a killed operator run), and any stale
one beside a target is swept before the next write there: the host lock guarantees no other
homekube is writing, so such a file can only be left from an earlier run.
"""

from __future__ import annotations

import base64

from homekube.facts.base import shell_quote
from homekube.plan.model import Change, LocalWrite, Run, WriteFile

STEP_MARK = "@@homekube-step@@"


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
        f'rm -f "$t"; echo "upload of {a.path} is incomplete" >&2; exit 1; fi\n'
        f'chown {shell_quote(a.owner + ":" + a.group)} "$t" && chmod {a.mode:04o} "$t" && '
        f'mv -f "$t" {p}; t=\n'
    )


def render(changes: list[Change]) -> str:
    """One script for all of a host's changes in a wave; prints a marker before each."""
    body: list[str] = []
    for i, c in enumerate(changes):
        body.append(f"printf '%s %d\\n' '{STEP_MARK}' {i}")
        for a in c.actions:
            if isinstance(a, WriteFile):
                body.append(_write(a))
            elif isinstance(a, Run):
                # a subshell with errexit: one failing command fails the step
                body.append(f"(\nset -euo pipefail\n{a.command}\n)")
            elif isinstance(a, LocalWrite):
                continue  # done on the operator machine by the executor
    inner = "\n".join(body)
    return (
        "homekube_main() {\n"
        "set -eo pipefail\n"
        "umask 077\n"
        "t=\n"
        'trap \'[ -z "$t" ] || rm -f -- "$t"\' EXIT\n'
        "trap 'exit 129' HUP PIPE TERM INT\n"
        "export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{inner}\n"
        f"printf '%s done\\n' '{STEP_MARK}'\n"
        "}\n"
        "homekube_main\n"
    )


def failed_step(stdout: str) -> int | None:
    """Index of the step that was running when the script stopped (None if it finished)."""
    last: int | None = None
    for line in stdout.splitlines():
        if line.startswith(STEP_MARK + " "):
            tail = line[len(STEP_MARK) + 1 :].strip()
            if tail == "done":
                return None
            if tail.isdigit():
                last = int(tail)
    return last if last is not None else 0


def strip_marks(stdout: str) -> str:
    return "\n".join(ln for ln in stdout.splitlines() if not ln.startswith(STEP_MARK))
