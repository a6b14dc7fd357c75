"""A fact is a shell snippet plus a pure parser; one script gathers all of a host's facts.

An exec over SSH costs a round trip (~100 ms on a LAN, more with sudo); gathering fifty
facts one by one is five seconds per host. So every snippet is concatenated into a single
script whose sections are delimited by a marker carrying a per-run nonce, and each parser
sees only its own section. Parsers are pure so that they can be tested from captured output.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from homekube.shell import quote_always, words

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """`command` prints something; `parse` turns that text into a value."""

    name: str
    command: str
    parse: Callable[[str], T]


def compose(facts: Sequence[Fact[Any]], nonce: str | None = None) -> tuple[str, str]:
    """Build one POSIX shell script that runs every fact; return (script, marker)."""
    marker = f"@@homekube-{nonce or secrets.token_hex(6)}@@"
    lines = [
        "export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "set +e",
    ]
    for f in facts:
        lines.append(f"printf '\\n%s %s\\n' '{marker}' '{f.name}'")
        # a subshell keeps one fact's `cd`/`exit`/`set` from leaking into the next
        lines.append(f"( {f.command}\n) 2>/dev/null")
    lines.append(f"printf '\\n%s %s\\n' '{marker}' '__end__'")
    return "\n".join(lines) + "\n", marker


def split(output: str, marker: str) -> dict[str, str]:
    """Cut the combined output back into one text per fact name."""
    sections: dict[str, str] = {}
    current: str | None = None
    buf: list[str] = []
    for line in output.split("\n"):
        if line.startswith(marker + " "):
            if current is not None:
                sections[current] = "\n".join(buf).strip("\n")
            current = line[len(marker) + 1 :].strip()
            buf = []
        elif current is not None:
            buf.append(line)
    if current is not None and current != "__end__":
        sections[current] = "\n".join(buf).strip("\n")
    return sections


def parse_all(facts: Sequence[Fact[Any]], output: str, marker: str) -> dict[str, Any]:
    """Run each parser over its section; a missing section parses as empty text."""
    sections = split(output, marker)
    return {f.name: f.parse(sections.get(f.name, "")) for f in facts}


def complete(output: str, marker: str) -> bool:
    """True when the script ran to its end (it was not cut off)."""
    return f"{marker} __end__" in output


#: kept for the modules that quote by hand; new code builds commands with homekube.shell
shell_quote = quote_always
shell_words = words
