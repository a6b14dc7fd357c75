"""Download, verify and install release binaries: the one shell recipe etcd, containerd and runc share.

Every install is the same few steps in one host exec: a private temp dir, ``curl`` the file,
check its SHA-256 (a pin from cluster.yaml or homekube, or else the checksum file published
beside it: ``SHA256SUMS`` on a mirror, upstream's own file otherwise), install each binary
atomically (``install`` to ``X.new``, ``mv`` over ``X``, so a running daemon keeps its inode
until it restarts), and record what was installed in a stamp.

The stamp (``inode size mtime version``) lets the facts script read a binary's version without
starting it (``etcd --version`` costs ~17 ms of CPU per host per run; containerd's similar):
while the binary is the same file, the stamp's version stands; a replaced binary has another
inode or mtime, and the fact falls back to asking the binary.
"""

from __future__ import annotations

from collections.abc import Sequence

from homekube.components.artifacts import Artifact
from homekube.facts.base import shell_quote
from homekube.shell import quote

__all__ = ["STAMP_DIR", "fetch_verified", "install_binaries", "stamp_lines", "stamped_version"]

STAMP_DIR = "/var/lib/homekube"

TEMP_DIR = "d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT"
"""Opens every install script: downloads land in "$d", removed however the script ends."""


def fetch_verified(a: Artifact) -> list[str]:
    """Lines that download `a` into "$d" and stop (exit 1, naming the file) if it does not verify."""
    # names and URLs come from cluster.yaml: every one is a single quoted word, also in messages
    target = f'"$d"/{quote(a.filename)}'
    lines = [f"curl -fsSL --retry 3 -o {target} {shell_quote(a.url)}"]
    if a.sha256:
        lines.append(f'[ "$(sha256sum {target} | cut -d" " -f1)" = {quote(a.sha256)} ] || '
                     f'{{ echo {quote("checksum mismatch for " + a.filename)} >&2; exit 1; }}')
        return lines
    if not a.sums_url:
        return lines  # upstream over TLS from an immutable release tag, nothing to check against
    sums = f'"$d"/{quote(a.filename + ".sums")}'
    # `name` or `*name` (binary mode) in the second column; awk compares text, no regex
    lines += [
        f"curl -fsSL --retry 3 -o {sums} {shell_quote(a.sums_url)}",
        f"(cd \"$d\" && awk -v f={shell_quote(a.filename)} '$2 == f || $2 == \"*\" f' "
        f"{quote(a.filename + '.sums')} | sha256sum -c --quiet -) || "
        f"{{ echo {quote(f'{a.filename} is not in {a.sums_url} or does not match it')} >&2; exit 1; }}",
    ]
    return lines


def install_binaries(pairs: Sequence[tuple[str, str]], mode: int = 0o755) -> list[str]:
    """Lines that install each (source, destination) atomically."""
    return [f"install -m {mode:04o} {src} {dst}.new && mv -f {dst}.new {dst}" for src, dst in pairs]


def stamp_lines(binary: str, version: str, stamp: str) -> list[str]:
    """Lines that record `version` for the file now at `binary`."""
    return [
        f"install -d -m 0755 {stamp.rsplit('/', 1)[0]}",
        f"printf '%s %s\\n' \"$(stat -c '%i %s %Y' {binary})\" {shell_quote(version)} > {stamp}",
    ]


def stamped_version(key: str, binary: str, stamp: str, ask: str) -> str:
    """A facts snippet printing ``key=<version>`` for `binary`, or nothing when it is missing.

    `ask` is a command printing the version on stdout when the stamp does not match (it is
    run only then): e.g. ``"$b" --version | awk '{print $3}'``, with ``$b`` the binary.
    """
    return (
        f"b={binary}; if [ -x \"$b\" ]; then v=; "
        f"if [ -r {stamp} ]; then read -r i s m v < {stamp}; "
        "[ \"$i $s $m\" = \"$(stat -c '%i %s %Y' \"$b\")\" ] || v=; fi; "
        f"[ -n \"$v\" ] || v=$({ask} 2>/dev/null); printf '{key}=%s\\n' \"$v\"; fi"
    )
