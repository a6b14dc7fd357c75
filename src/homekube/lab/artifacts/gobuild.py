"""Build a recipe's binaries with one `go build`, into a cache keyed by everything that matters.

A cache entry is `<artifacts>/<name>-<version>-<hash>/` holding the binaries and build.json.
The hash covers the wrapper module's files, the build command, the Go version and, for cgo,
the versions of the C libraries linked in; anything else changing does not rebuild. Entries
are built in a temporary sibling and renamed into place, so a half-built entry never exists,
and a lock makes a second caller (another lab slot) wait for the first build instead of
running a second one on the same two cores.

Go's own caches go to `<go cache>/{mod,build}` (GOMODCACHE, GOCACHE): outside every work tree,
shared, and reused by the next build of another version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from homekube.lab.artifacts.recipes import GoRecipe
from homekube.lab.settings import ArtifactPaths
from homekube.lab.system import (
    LabError,
    ensure_packages,
    exclusive_lock,
    lend_priority,
    log_tail,
    package_version,
    run,
    run_long,
)

Progress = Callable[[str], None]

#: Bump when the build command changes in a way the hash below does not see.
FORMAT = 1
_LOCK_TIMEOUT = 4 * 3600.0  # a cold Kubernetes build by another slot can take a while


@dataclass(frozen=True)
class Built:
    """A cache entry: where the binaries are, and how long building them took (None: cached)."""

    recipe: GoRecipe
    dir: Path
    seconds: float | None

    def binary(self, name: str) -> Path:
        path = self.dir / name
        if name not in self.recipe.binaries or not path.is_file():
            raise LabError(f"{self.recipe.key} has no binary {name!r} in {self.dir}")
        return path


def go_env(paths: ArtifactPaths, *, cgo: bool = False) -> dict[str, str]:
    """The environment of every go command the lab runs."""
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(paths.gomodcache),
        GOCACHE=str(paths.gocache),
        # never download another Go: the installed one is part of the hash
        GOTOOLCHAIN="local",
        # -modcacherw: the module cache can be deleted with rm -rf; -buildvcs=false: the
        # wrapper modules sit inside homekube's git checkout, whose commit must not end up
        # in (and change) the binaries
        GOFLAGS="-modcacherw -buildvcs=false",
        GOWORK="off",
        CGO_ENABLED="1" if cgo else "0",
    )
    return env


@functools.cache
def go_version() -> str:
    cp = run(["go", "env", "GOVERSION"], timeout=60, env={**os.environ, "GOTOOLCHAIN": "local"})
    return cp.stdout.strip()


def ldflags(recipe: GoRecipe) -> str:
    parts = ["-s", "-w"]
    for key, value in sorted(recipe.ldflags_x.items()):
        if any(c.isspace() for c in key + value):
            raise LabError(f"{recipe.key}: -X {key}={value!r} must not contain spaces")
        parts.append(f"-X {key}={value}")
    if recipe.cgo:
        # a static binary runs on any host, whatever libseccomp it has (or lacks)
        parts.append("-linkmode external -extldflags -static")
    return " ".join(parts)


def build_argv(recipe: GoRecipe, out_dir: Path) -> list[str]:
    argv = ["go", "build", "-trimpath", "-v", "-ldflags", ldflags(recipe)]
    if recipe.tags:
        argv += ["-tags", ",".join(recipe.tags)]
    return [*argv, "-o", f"{out_dir}/", *recipe.packages]


def module_files(recipe: GoRecipe) -> dict[str, str]:
    """sha256 of every file of the wrapper module, by relative path."""
    d = recipe.module_dir
    if not (d / "go.mod").is_file():
        raise LabError(
            f"{recipe.key}: no wrapper module at {d}",
            hint=f"write it with `python -m homekube.lab.artifacts module {recipe.key}`",
        )
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            out[str(p.relative_to(d))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def recipe_inputs(recipe: GoRecipe) -> dict[str, object]:
    """Everything a build's output depends on (hashed into the cache key, kept in build.json)."""
    inputs: dict[str, object] = {
        "format": FORMAT,
        "name": recipe.name,
        "version": recipe.version,
        "files": module_files(recipe),
        "argv": build_argv(recipe, Path("OUT")),
        "renames": dict(sorted(recipe.renames.items())),
        "cgo": recipe.cgo,
        "go": go_version(),
    }
    if recipe.cgo:
        inputs["libraries"] = {p: package_version(p) for p in recipe.build_deps}
    return inputs


def recipe_hash(recipe: GoRecipe) -> str:
    blob = json.dumps(recipe_inputs(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def entry_dir(recipe: GoRecipe, paths: ArtifactPaths | None = None) -> Path:
    paths = paths or ArtifactPaths.from_env()
    return paths.root / f"{recipe.key}-{recipe_hash(recipe)}"


def _complete(d: Path, recipe: GoRecipe) -> bool:
    return (d / "build.json").is_file() and all((d / b).is_file() for b in recipe.binaries)


def _packages_compiled(log: Path) -> int:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    # `go build -v` prints one import path per package it compiles (cached ones are silent)
    return sum(1 for ln in lines if ln and not ln.startswith(("#", "go: ", " ", "\t")))


def build_errors(log: Path, limit: int = 30) -> str:
    """The compiler's complaints from a `go build -v` log, else its last lines.

    -v interleaves package names with the errors, so the tail alone often shows no error:
    the errors are the `# package` headers, the lines under them, and `go: ...` lines.
    """
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no output)"
    picked: list[str] = []
    in_error = False
    for ln in lines:
        if ln.startswith("# ") or ln.startswith("go: "):
            in_error = True
            picked.append(ln)
        elif in_error and (ln.startswith((" ", "\t")) or ".go:" in ln or ":" in ln.split(" ")[0]):
            picked.append(ln)
        else:
            in_error = False
    if not picked:
        return log_tail(log, limit)
    return "\n".join(picked[:limit]) + ("\n..." if len(picked) > limit else "")


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def ensure_built(
    recipe: GoRecipe,
    progress: Progress,
    *,
    force: bool = False,
    paths: ArtifactPaths | None = None,
) -> Built:
    """The recipe's cache entry, building it first when it is missing (or when forced)."""
    paths = paths or ArtifactPaths.from_env()
    entry = entry_dir(recipe, paths)
    if not force and _complete(entry, recipe):
        return Built(recipe, entry, None)
    paths.root.mkdir(parents=True, exist_ok=True)
    # a build started with `nice` in the background (CI) runs at this caller's priority from
    # the moment the caller waits for it
    # the lock's holder builds one recipe after another: stop waiting once it built this one
    done = None if force else lambda: _complete(entry, recipe)
    with exclusive_lock(
        paths.lock_file, timeout=_LOCK_TIMEOUT, on_wait=lend_priority, done=done
    ) as locked:
        if not locked or (not force and _complete(entry, recipe)):  # built by the holder
            return Built(recipe, entry, None)
        if recipe.build_deps:
            ensure_packages(recipe.build_deps, f"building {recipe.key}")
        return _build(recipe, entry, paths, progress)


def _build(recipe: GoRecipe, entry: Path, paths: ArtifactPaths, progress: Progress) -> Built:
    # under the lock nobody else builds: temporary dirs left here are a killed run's
    for stale in paths.root.glob(f".{recipe.key}-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    paths.gomodcache.mkdir(parents=True, exist_ok=True)
    paths.gocache.mkdir(parents=True, exist_ok=True)
    what = f"building {recipe.key}"
    progress(f"{what} ({', '.join(recipe.binaries)})")
    t0 = time.monotonic()

    def beat(elapsed: float, log: Path) -> None:
        progress(f"{what}: {_fmt(elapsed)}, {_packages_compiled(log)} packages compiled")

    log_path = tmp / "build.log"
    try:
        run_long(
            build_argv(recipe, tmp),
            what=what,
            log_path=log_path,
            timeout=recipe.timeout,
            cwd=recipe.module_dir,
            env=go_env(paths, cgo=recipe.cgo),
            heartbeat=beat,
            summarize=build_errors,
        )
        for old, new in recipe.renames.items():
            (tmp / old).rename(tmp / new)
        missing = [b for b in recipe.binaries if not (tmp / b).is_file()]
        if missing:
            raise LabError(f"{what}: go build did not write {', '.join(missing)}")
    except BaseException:
        # keep the log of a failed build where the error message points
        failed = entry.with_name(f".{entry.name}.failed.log")
        if log_path.is_file():
            shutil.copy(log_path, failed)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.monotonic() - t0
    sizes = {b: (tmp / b).stat().st_size for b in recipe.binaries}
    info = {
        "inputs": recipe_inputs(recipe),
        "seconds": round(seconds, 1),
        "packages_compiled": _packages_compiled(log_path),
        "sizes": sizes,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / "build.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(entry, ignore_errors=True)  # a forced rebuild replaces the old entry
    tmp.rename(entry)
    progress(f"{what}: done in {_fmt(seconds)} ({sum(sizes.values()) / 2**20:.0f} MiB)")
    return Built(recipe, entry, seconds)


# ------------------------------------------------------------------- writing wrapper modules


def module_text(recipe: GoRecipe, go_directive: str = "1.26") -> str:
    """go.mod before `go get` fills in requirements: module line, go line, replaces."""
    lines = [f"module homekube.lab/{recipe.name}", "", f"go {go_directive}", ""]
    if recipe.replaces:
        lines.append("replace (")
        lines += [f"\t{m} => {m} {v}" for m, v in sorted(recipe.replaces.items())]
        lines += [")", ""]
    for m, d in sorted(recipe.local_replaces.items()):
        lines += [f"replace {m} => {d}", ""]
    return "\n".join(lines)


def write_module(
    recipe: GoRecipe, progress: Progress, paths: ArtifactPaths | None = None
) -> Path:
    """(Re)write the recipe's wrapper module: go.mod + go.sum from the recipe (a dev step).

    Hand-written main packages in the directory are kept. The version suffix on every
    `go get -tool` matters: without it go get would upgrade to the newest release.
    """
    paths = paths or ArtifactPaths.from_env()
    d = recipe.module_dir
    d.mkdir(parents=True, exist_ok=True)
    (d / "go.mod").write_text(module_text(recipe))
    (d / "go.sum").unlink(missing_ok=True)
    for m, rel in recipe.local_replaces.items():
        if not (d / rel / "go.mod").is_file():
            raise LabError(f"{recipe.key}: the stand-in for {m} is missing ({d / rel})")
    env = go_env(paths, cgo=recipe.cgo)
    steps: list[list[str]] = []
    if recipe.tools:
        steps.append(["go", "get", "-tool", *(f"{p}@{v}" for p, v in sorted(recipe.tools.items()))])
    if recipe.upgrades:
        steps.append(["go", "get", *(f"{m}@{v}" for m, v in sorted(recipe.upgrades.items()))])
    if recipe.own_packages:
        steps.append(["go", "mod", "tidy"])
    for argv in steps:
        progress(f"{recipe.key}: {' '.join(argv[:3])} ...")
        run_long(
            argv,
            what=f"writing the {recipe.key} module",
            log_path=paths.root / "modules" / f"{recipe.key}.log",
            timeout=1800,
            cwd=d,
            env=env,
        )
    if not (d / "go.sum").exists():
        (d / "go.sum").write_text("")
    return d


def describe(built: Built) -> Mapping[str, object]:
    try:
        data = json.loads((built.dir / "build.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
