"""The facts planning needs, each a snippet plus a pure parser.

The snippets run under bash (every transport runs `bash -s`; bash is on every supported
distribution) and use only what a minimal Debian, Ubuntu or EL9 install has (coreutils,
util-linux, iproute2, tar, systemd); nothing is installed to gather facts. Shell builtins are
preferred over a fork per item: the facts script runs on every host on every run.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shlex
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from homekube.facts.base import Fact, shell_quote, shell_words

# ---------------------------------------------------------------------------------------------
# value types


@dataclass(frozen=True)
class OsInfo:
    id: str
    version_id: str
    id_like: tuple[str, ...]
    pretty: str

    @property
    def family(self) -> Literal["debian", "rhel", "unknown"]:
        ids = {self.id, *self.id_like}
        if ids & {"debian", "ubuntu"}:
            return "debian"
        if ids & {"rhel", "fedora", "centos", "rocky", "almalinux"}:
            return "rhel"
        return "unknown"

    @property
    def major(self) -> str:
        return self.version_id.split(".")[0]


@dataclass(frozen=True)
class Memory:
    total: int
    available: int
    swap_total: int
    swap_free: int


@dataclass(frozen=True)
class SysctlState:
    value: str | None  # None: the key does not exist on this kernel
    writable: bool


@dataclass(frozen=True)
class PackageState:
    name: str
    version: str | None  # None: not installed


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str  # loaded / not-found / masked
    active: str  # active / inactive / failed / activating
    enabled: str  # enabled / disabled / static / masked / "" when not found

    @property
    def exists(self) -> bool:
        return self.load not in ("not-found", "")

    @property
    def is_active(self) -> bool:
        return self.active in ("active", "reloading", "activating")

    @property
    def is_enabled(self) -> bool:
        return self.enabled in ("enabled", "enabled-runtime", "static", "alias", "generated")


@dataclass(frozen=True)
class FileState:
    path: str
    mode: int
    owner: str
    group: str
    size: int
    sha256: str
    content: bytes | None  # None when secret or too large to bring back
    kind: str = "file"  # file / dir / link


@dataclass(frozen=True)
class Address:
    dev: str
    family: int
    address: str
    prefix: int


@dataclass(frozen=True)
class SwapDevice:
    name: str
    kind: str
    size_kib: int


@dataclass(frozen=True)
class FstabEntry:
    line_no: int
    spec: str
    mountpoint: str
    fstype: str
    raw: str


MAX_CONTENT = 256 * 1024

# ---------------------------------------------------------------------------------------------
# parsers (pure)


def parse_os_release(text: str) -> OsInfo:
    kv: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        k, _, v = line.partition("=")
        try:
            parts = shlex.split(v)
            kv[k.strip()] = parts[0] if parts else ""
        except ValueError:
            kv[k.strip()] = v.strip().strip('"')
    return OsInfo(
        id=kv.get("ID", "unknown").lower(),
        version_id=kv.get("VERSION_ID", ""),
        id_like=tuple(kv.get("ID_LIKE", "").lower().split()),
        pretty=kv.get("PRETTY_NAME", kv.get("ID", "unknown")),
    )


def parse_int(text: str, default: int = 0) -> int:
    try:
        return int(text.strip().split()[0])
    except (ValueError, IndexError):
        return default


def parse_meminfo(text: str) -> Memory:
    vals: dict[str, int] = {}
    for line in text.splitlines():
        k, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            mult = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
            vals[k.strip()] = int(parts[0]) * mult
    return Memory(
        total=vals.get("MemTotal", 0),
        available=vals.get("MemAvailable", vals.get("MemFree", 0)),
        swap_total=vals.get("SwapTotal", 0),
        swap_free=vals.get("SwapFree", 0),
    )


def parse_swaps(text: str) -> list[SwapDevice]:
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[2].isdigit():
            out.append(SwapDevice(parts[0], parts[1], int(parts[2])))
    return out


def parse_fstab(text: str) -> list[FstabEntry]:
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) >= 3:
            out.append(FstabEntry(i, parts[0], parts[1], parts[2], line))
    return out


def parse_cgroup(text: str) -> int:
    return 2 if text.strip() == "cgroup2fs" else 1


def parse_modules(text: str) -> dict[str, str]:
    """`name state` lines → state in {loaded, builtin, loadable, missing}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def parse_sysctls(text: str) -> dict[str, SysctlState]:
    out: dict[str, SysctlState] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        key, access, value = parts
        if access == "missing":
            out[key] = SysctlState(None, False)
        else:
            out[key] = SysctlState(" ".join(value.split()), access == "rw")
    return out


def parse_packages(text: str) -> dict[str, PackageState]:
    """dpkg-query/rpm lines `name<TAB>version<TAB>status`; only installed ones count."""
    out: dict[str, PackageState] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        name, version, status = parts[0], parts[1], parts[2].strip()
        # dpkg's db:Status-Abbrev is <wanted><state><error>: "ii " installed, "hi " installed
        # and held (apt-mark hold), "rc " removed with its config left
        installed = status[1:2] == "i" or status == "rpm"
        if installed:
            out[name] = PackageState(name, version)
        elif name not in out:
            out[name] = PackageState(name, None)
    return out


def parse_units(text: str, asked: Sequence[str] = ()) -> dict[str, UnitState]:
    """`systemctl show -p Id,LoadState,ActiveState,UnitFileState` blocks.

    Blocks come in the order the units were asked for; an alias (sshd.service on Debian is
    ssh.service) reports the real unit's Id, so the answer is filed under both names.
    """
    out: dict[str, UnitState] = {}
    blocks = [b for b in text.split("\n\n") if b.strip()]
    for i, block in enumerate(blocks):
        kv: dict[str, str] = {}
        for line in block.splitlines():
            k, _, v = line.partition("=")
            kv[k.strip()] = v.strip()
        if "Id" in kv:
            st = UnitState(kv["Id"], kv.get("LoadState", ""), kv.get("ActiveState", ""),
                           kv.get("UnitFileState", ""))
            out[kv["Id"]] = st
            if i < len(asked) and asked[i] != kv["Id"] and len(blocks) == len(asked):
                out[asked[i]] = UnitState(asked[i], st.load, st.active, st.enabled)
    return out


_KINDS = {"regular file": "file", "regular empty file": "file", "directory": "dir",
          "symbolic link": "link"}


def _untar(b64: str) -> dict[str, bytes | None]:
    """The regular files of a base64 tar stream (`tar -P`: names are absolute paths)."""
    out: dict[str, bytes | None] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64)), mode="r:") as tf:
            for m in tf:
                fh = tf.extractfile(m) if m.isfile() else None
                if fh is not None:
                    out[m.name if m.name.startswith("/") else "/" + m.name] = fh.read()
    except (ValueError, tarfile.TarError, EOFError):
        pass  # a cut stream: whatever was read before stands, the rest have no content
    return out


def parse_files(text: str, asked: Sequence[str] = ()) -> dict[str, FileState | None]:
    """Records `S<TAB>path kind mode owner group size`, `H<TAB>sha256  path`, `T<TAB>b64 tar`.

    A path that was asked for but has no S record does not exist. (`C<TAB>path<TAB>b64` content
    records of older captures are still read, as is the older one-line-per-path
    format, `path<TAB>kind<TAB>mode<TAB>owner<TAB>group<TAB>size<TAB>sha256<TAB>base64|-` or
    `path<TAB>absent`, is still read: captured fixtures use it.)
    """
    out: dict[str, FileState | None] = {p: None for p in asked}
    stats: dict[str, list[str]] = {}
    hashes: dict[str, str] = {}
    contents: dict[str, bytes | None] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        tag = parts[0]
        if tag == "S" and len(parts) == 7:
            stats[parts[1]] = parts[2:]
        elif tag == "H" and len(parts) == 2:
            digest, _, path = parts[1].partition("  ")
            if path:
                hashes[path] = digest
        elif tag == "T" and len(parts) == 2:
            contents.update(_untar(parts[1]))
        elif tag == "C" and len(parts) == 3:
            try:
                contents[parts[1]] = base64.b64decode(parts[2])
            except ValueError:
                contents[parts[1]] = None
        elif len(parts) == 2 and parts[1] == "absent":
            out[parts[0]] = None
        elif len(parts) == 8:
            path, kind, mode, owner, group, size, sha, b64 = parts
            content: bytes | None = None
            if b64 != "-":
                try:
                    content = base64.b64decode(b64)
                except ValueError:
                    content = None
            out[path] = FileState(path=path, mode=int(mode, 8), owner=owner, group=group,
                                  size=int(size) if size.isdigit() else 0, sha256=sha,
                                  content=content, kind=kind)
    for path, data in contents.items():
        # a file rewritten between hashing and reading: its bytes are not the hashed ones
        if data is not None and path in hashes and hashlib.sha256(data).hexdigest() != hashes[path]:
            contents[path] = None
    for path, (ftype, mode, owner, group, size) in stats.items():
        kind = _KINDS.get(ftype, "other")
        out[path] = FileState(
            path=path, mode=int(mode, 8), owner=owner, group=group,
            size=int(size) if size.isdigit() else 0,
            sha256=hashes.get(path, "-") if kind == "file" else "-",
            content=contents.get(path), kind=kind,
        )
    return out


def parse_addresses(text: str) -> list[Address]:
    """`ip -o addr show` lines."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] not in ("inet", "inet6"):
            continue
        dev = parts[1].split("@")[0]
        addr, _, prefix = parts[3].partition("/")
        out.append(Address(dev, 4 if parts[2] == "inet" else 6, addr, int(prefix or 0)))
    return out


def parse_df(text: str) -> dict[str, int]:
    """`df -Pk PATH...` → mountpoint-independent {path asked: free bytes}, in order asked."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * 1024
    return out


def parse_commands(text: str) -> frozenset[str]:
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def parse_json(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def parse_kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


# ---------------------------------------------------------------------------------------------
# facts


def os_release() -> Fact[OsInfo]:
    return Fact("os", "cat /etc/os-release", parse_os_release)


def arch() -> Fact[str]:
    return Fact("arch", "uname -m", lambda t: t.strip())


def kernel() -> Fact[str]:
    return Fact("kernel", "uname -r", lambda t: t.strip())


def cpus() -> Fact[int]:
    return Fact("cpus", "nproc", parse_int)


def memory() -> Fact[Memory]:
    return Fact("memory", "cat /proc/meminfo", parse_meminfo)


def swaps() -> Fact[list[SwapDevice]]:
    return Fact("swaps", "cat /proc/swaps", parse_swaps)


def fstab() -> Fact[list[FstabEntry]]:
    return Fact("fstab", "cat /etc/fstab", parse_fstab)


def cgroup() -> Fact[int]:
    return Fact("cgroup", "stat -fc %T /sys/fs/cgroup", parse_cgroup)


def hostname() -> Fact[str]:
    return Fact("hostname", "cat /proc/sys/kernel/hostname", lambda t: t.strip())


def modules(names: Iterable[str]) -> Fact[dict[str, str]]:
    """A module counts as present when loaded or built in (kernels without loadable modules)."""
    # cheapest test first: a builtin `[` before a `grep`, the kernel release read once
    cmd = (
        f"r=$(uname -r); for m in {shell_words(sorted(names))}; do "
        'if [ -d "/sys/module/$m" ]; then echo "$m loaded"; '
        'elif [ "$m" = br_netfilter ] && [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; '
        'then echo "$m builtin"; '
        'elif [ "$m" = overlay ] && grep -qw overlay /proc/filesystems; then echo "$m builtin"; '
        'elif grep -qs "/$m.ko" "/lib/modules/$r/modules.builtin"; then echo "$m builtin"; '
        'elif modinfo "$m" >/dev/null 2>&1; then echo "$m loadable"; '
        'else echo "$m missing"; fi; done'
    )
    return Fact("modules", cmd, parse_modules)


def sysctls(keys: Iterable[str]) -> Fact[dict[str, SysctlState]]:
    """Shell builtins only (the script runs under bash): a `tr`/`cat` per key cost ~25 ms."""
    cmd = (
        f"for k in {shell_words(sorted(keys))}; do "
        'p="/proc/sys/${k//.//}"; '
        'if [ ! -e "$p" ]; then printf "%s\\tmissing\\t\\n" "$k"; continue; fi; '
        'v=; while IFS= read -r l || [ -n "$l" ]; do v="$v $l"; done < "$p"; '
        "v=${v//$'\\t'/ }; "
        'if [ -w "$p" ]; then a=rw; else a=ro; fi; '
        'printf "%s\\t%s\\t%s\\n" "$k" "$a" "$v"; done'
    )
    return Fact("sysctls", cmd, parse_sysctls)


def packages(names: Iterable[str]) -> Fact[dict[str, PackageState]]:
    words = shell_words(sorted(names))
    cmd = (
        "if command -v dpkg-query >/dev/null; then "
        f"dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{db:Status-Abbrev}}\\n' {words}; "
        "elif command -v rpm >/dev/null; then "
        f"rpm -q --qf '%{{NAME}}\\t%{{VERSION}}-%{{RELEASE}}\\trpm\\n' {words} | grep -v 'is not installed'; fi"
    )
    return Fact("packages", cmd, parse_packages)


def units(names: Iterable[str]) -> Fact[dict[str, UnitState]]:
    asked = sorted(names)
    cmd = f"systemctl show --no-pager -p Id,LoadState,ActiveState,UnitFileState {shell_words(asked)}"
    return Fact("units", cmd, lambda t: parse_units(t, asked))


def files(paths: dict[str, bool]) -> Fact[dict[str, FileState | None]]:
    """Stat, hash and (for small non-secret files) read each path; `paths` maps path→secret.

    One `stat` and one `sha256sum` for all paths, and one tar stream of the readable plain
    files: forking per file and per attribute cost ~300 ms on a host with 40 managed paths.
    """
    plain = sorted(p for p, secret in paths.items() if not secret)
    every = sorted(paths)
    if not every:
        return Fact("files", "true", lambda t: parse_files(t, []))
    words = shell_words(every)
    # large files (binaries) are neither hashed nor read: nothing homekube writes is that big
    body = (
        f"stat --printf 'S\\t%n\\t%F\\t%a\\t%U\\t%G\\t%s\\n' -- {words} 2>/dev/null\n"
        f"find {words} -maxdepth 0 -type f -size -1024k -print0 2>/dev/null | "
        "xargs -0 -r sha256sum -- | sed 's/^/H\\t/'\n"
    )
    if plain:
        # contents as one tar stream (names and sizes included): a `base64` per file cost
        # a fork and an exec each, ~1 ms apiece on every host, every run. Without tar (an EL
        # minimal install before host prep adds it), one `base64` per file as before.
        find = (f"find {shell_words(plain)} -maxdepth 0 -type f "
                f"-size -{MAX_CONTENT // 1024 + 1}k 2>/dev/null")
        body += (
            f"if command -v tar >/dev/null; then {find} -print0 | "
            "tar -cP -b 1 --null --no-recursion -T - -f - 2>/dev/null | "
            "base64 -w0 | sed 's/^/T\\t/'; echo\n"
            f'else {find} | while IFS= read -r p; do printf "C\\t%s\\t" "$p"; base64 -w0 "$p"; echo; done; fi\n'
        )
    return Fact("files", body, lambda t: parse_files(t, every))


def addresses() -> Fact[list[Address]]:
    return Fact("addresses", "ip -o addr show", parse_addresses)


def disk_free(paths: Sequence[str]) -> Fact[dict[str, int]]:
    """Free bytes on the filesystem holding each path (its nearest existing parent): one `df`."""
    if not paths:
        return Fact("disk", "true", parse_df)
    names = "\t".join(paths)
    cmd = (
        f"set --; for p in {shell_words(list(paths))}; do q=$p; "
        'while [ ! -e "$q" ] && [ "$q" != / ]; do q=${q%/*}; q=${q:-/}; done; set -- "$@" "$q"; done; '
        f"df -Pk \"$@\" | awk -v names={shell_quote(names)} "
        "'BEGIN{split(names, a, \"\\t\")} NR>1{printf \"%s\\t%s\\n\", a[NR-1], $4}'"
    )
    return Fact("disk", cmd, parse_df)


def commands(names: Iterable[str]) -> Fact[frozenset[str]]:
    cmd = f"for c in {shell_words(sorted(names))}; do command -v \"$c\" >/dev/null && echo \"$c\"; done"
    return Fact("commands", cmd, parse_commands)


@dataclass
class Probes:
    """What a component wants gathered about a host; merged across components before the exec."""

    files: dict[str, bool] = field(default_factory=dict)  # path -> secret
    sysctls: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    packages: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)
    commands: set[str] = field(default_factory=set)
    disk: set[str] = field(default_factory=set)
    extra: list[Fact[Any]] = field(default_factory=list)

    def merge(self, other: Probes) -> Probes:
        for p, s in other.files.items():
            self.files[p] = self.files.get(p, False) or s
        self.sysctls |= other.sysctls
        self.units |= other.units
        self.packages |= other.packages
        self.modules |= other.modules
        self.commands |= other.commands
        self.disk |= other.disk
        names = {f.name for f in self.extra}
        self.extra += [f for f in other.extra if f.name not in names]
        return self


def base_facts() -> list[Fact[Any]]:
    return [os_release(), arch(), kernel(), cpus(), memory(), swaps(), fstab(), cgroup(),
            hostname(), addresses()]


def facts_for(probes: Probes) -> list[Fact[Any]]:
    out = base_facts()
    out.append(files(probes.files))
    out.append(sysctls(probes.sysctls))
    out.append(units(probes.units or {"homekube-none.service"}))
    out.append(packages(probes.packages or {"homekube-none"}))
    out.append(modules(probes.modules))
    out.append(commands(probes.commands))
    out.append(disk_free(sorted(probes.disk or {"/"})))
    out.extend(probes.extra)
    return out
