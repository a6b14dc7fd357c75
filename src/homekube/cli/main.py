"""The command line: config in, plans and results out; errors become messages and exit codes.

Exit codes: 0 ok, 1 failed on a host, 2 bad config or usage, 3 preflight refused (or a
host that cannot be reached).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from homekube.cli import output
from homekube.cli.options import DEFAULT_CONFIG, ConfigOpt
from homekube.config.loader import load, warnings_for
from homekube.config.model import ClusterConfig
from homekube.errors import HomekubeError, UsageError

T = TypeVar("T")

app = typer.Typer(
    name="homekube",
    help="Build and run a kubeadm home cluster (cri-o, TLS etcd, Calico, Headlamp) over SSH "
    "from one cluster.yaml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)
log = logging.getLogger("homekube")



def _setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug or os.environ.get("HOMEKUBE_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("asyncssh").setLevel(logging.WARNING if level > logging.DEBUG else logging.INFO)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def guarded(fn: Callable[[], int | None]) -> None:
    """Run a command body; turn our errors into a message + hint + exit code."""
    try:
        code = fn()
    except HomekubeError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        if e.hint:
            err.print(f"hint: {e.hint}", markup=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        raise typer.Exit(130) from None
    raise typer.Exit(code or 0)


def load_config(path: Path) -> ClusterConfig:
    cfg = load(path)
    for w in warnings_for(cfg):
        err.print(f"warning: {w}", markup=False, soft_wrap=True)
    return cfg


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Log details to stderr.")] = False,
) -> None:
    _setup_logging(debug)


@app.command()
def schema() -> None:
    """Print the JSON Schema of cluster.yaml (for editor completion)."""
    from homekube.config.model import ClusterConfig

    s = ClusterConfig.model_json_schema(by_alias=True)
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["title"] = "homekube cluster.yaml"
    sys.stdout.write(json.dumps(s, indent=2) + "\n")


@app.command()
def init(
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Address of a host (repeatable); the first gets every role."),
    ] = None,
    name: Annotated[str, typer.Option(help="Cluster name.")] = "home",
) -> None:
    """Print a commented starter cluster.yaml."""
    from homekube.config.starter import starter

    def body() -> int:
        sys.stdout.write(starter(name, host or []))
        return 0

    guarded(body)


@app.command()
def check(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check cluster.yaml and run preflight on every host; changes nothing."""
    from homekube.ops.session import open_session

    def body() -> int:
        cfg = load_config(config)

        async def go() -> int:
            s = await open_session(cfg, lock=False, enforce_preflight=False)
            try:
                code = output.print_check(console, s)
                await _disk_check(cfg, s)
                return code
            finally:
                await s.close()

        return run_async(go())

    guarded(body)


async def _disk_check(cfg: ClusterConfig, s: Any) -> None:
    """Measure fdatasync latency where etcd keeps its data; warn like etcd's docs do."""
    import asyncio as aio

    from homekube.facts.base import compose, parse_all
    from homekube.facts.disk import WARN_P99_MS, fsync_latency

    fact = fsync_latency(cfg.etcd.data_dir)

    async def one(name: str) -> tuple[str, Any]:
        script, marker = compose([fact])
        res = await s.transports[name].run(script, timeout=120)
        return name, parse_all([fact], res.stdout, marker)["fsync"]

    results = await aio.gather(*(one(h.name) for h in cfg.etcd_hosts))
    for name, lat in results:
        shown = f"p99 {lat.p99_ms:.2f} ms" if lat.p99_ms is not None else (
            f"mean {lat.mean_ms:.2f} ms" if lat.mean_ms is not None else "not measurable")
        console.print(f"{name}: fdatasync latency on {cfg.etcd.data_dir}: {shown}", markup=False)
        if lat.slow:
            console.print(
                f"warning: {name}: above etcd's {WARN_P99_MS:.0f} ms guidance; on slow disks raise "
                "etcd.heartbeatMs/electionMs (the seed used 1000/5000; 10 x RTT at least) or move "
                "the data dir to an SSD", markup=False)


def _only(only: str | None) -> set[str] | None:
    if not only:
        return None
    from homekube.components.registry import phase_names

    names = {x.strip() for x in only.split(",") if x.strip()}
    unknown = names - set(phase_names())
    if unknown:
        raise UsageError(f"unknown phase(s): {', '.join(sorted(unknown))}",
                         hint=f"phases: {', '.join(phase_names())}")
    return names


@app.command()
def plan(
    config: ConfigOpt = DEFAULT_CONFIG,
    out: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    only: Annotated[str | None, typer.Option(help="Comma-separated phases to plan.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also list what is unchanged.")] = False,
) -> None:
    """Show, per host, every change apply would make."""
    from homekube.ops.session import open_session

    def body() -> int:
        if out not in ("text", "json"):
            raise UsageError("--output must be text or json")
        phases = _only(only)
        cfg = load_config(config)

        async def go() -> int:
            s = await open_session(cfg, lock=False)
            try:
                p = s.plan(phases)
            finally:
                await s.close()
            if out == "json":
                sys.stdout.write(json.dumps(p.to_json(), indent=2) + "\n")
            else:
                output.print_plan(console, p, verbose=verbose)
            return 0

        return run_async(go())

    guarded(body)


@app.command()
def apply(
    config: ConfigOpt = DEFAULT_CONFIG,
    only: Annotated[str | None, typer.Option(help="Comma-separated phases to run.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
) -> None:
    """Converge every host to cluster.yaml; a second apply changes nothing."""
    from homekube.ops.apply import run_apply

    def body() -> int:
        phases = _only(only)
        cfg = load_config(config)
        t0 = time.monotonic()
        return run_async(run_apply(cfg, console, phases=phases, quiet=quiet, t0=t0))

    guarded(body)


@app.command()
def status(config: ConfigOpt = DEFAULT_CONFIG,
           out: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text") -> None:
    """Show hosts, etcd members and health, and certificate lifetimes."""
    from homekube.ops.status import run_status

    def body() -> int:
        cfg = load_config(config)
        return run_async(run_status(cfg, console, as_json=(out == "json")))

    guarded(body)


@app.command()
def reset(
    config: ConfigOpt = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option("--host", help="Reset only this host.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really do it (otherwise only show what).")] = False,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Keep etcd data and backups.")] = False,
) -> None:
    """Remove everything homekube installed (units, files, repos, data, packages it added)."""
    from homekube.ops.reset import run_reset

    def body() -> int:
        cfg = load_config(config)
        return run_async(run_reset(cfg, console, host=host, yes=yes, keep_data=keep_data))

    guarded(body)


@app.command()
def render(
    out: Annotated[Path, typer.Option("--out", help="Directory to write into.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Write every file homekube would put on every host, without contacting any host."""
    from homekube.ops.render_out import render_all

    def body() -> int:
        cfg = load_config(config)
        n = render_all(cfg, out)
        console.print(f"wrote {n} files under {out}", markup=False)
        return 0

    guarded(body)


def _mount() -> None:
    from homekube.cli.lab_cmd import app as lab_app

    app.add_typer(lab_app, name="lab", help="Local test hosts (systemd-nspawn machines).")
    # Verbs that live in their own modules register themselves here: each module has
    # `register(app, guarded, load_config, console)`.
    import importlib

    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(app, guarded, load_config, console)


#: modules adding verbs (kept as a list so each feature owns its CLI file)
COMMAND_MODULES: list[str] = ["homekube.cli.day2_cmd", "homekube.cli.k8s_cmd"]

_mount()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
