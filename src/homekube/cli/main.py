"""The command line: config in, plans and results out; errors become messages and exit codes.

Results go to stdout, progress, warnings and errors to stderr. Exit codes (README has the
table): 0 ok, 1 failed on a host (or gave up at --timeout), 2 bad config or usage, 3
preflight refused or a host unreachable, 4 `plan --detailed-exitcode` with changes pending,
5 `status` found etcd unhealthy.
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

from homekube import __version__
from homekube.cli import output
from homekube.cli.options import (
    DEFAULT_CONFIG,
    ConfigOpt,
    OutputOpt,
    QuietOpt,
    StepTimeoutOpt,
    TimeoutOpt,
    YesOpt,
)
from homekube.config.model import ClusterConfig
from homekube.errors import HomekubeError, UsageError

T = TypeVar("T")

#: `plan --detailed-exitcode` when changes are pending (0: none; like Terraform's 2, which
#: here already means a bad config)
EXIT_CHANGES = 4
#: `status` when etcd has an unhealthy or missing member (3: a host is unreachable)
EXIT_UNHEALTHY = 5

app = typer.Typer(
    name="homekube",
    help="Build and run a kubeadm home cluster (cri-o, TLS etcd, Calico, Headlamp) over SSH "
    "from one cluster.yaml.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger("homekube")


class _Run:
    """What the command running now has opened: its run log (named in a failure)."""

    log: Any = None

    @classmethod
    def log_path(cls) -> Path | None:
        return cls.log.path if cls.log is not None and cls.log.opened else None


def _setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug or os.environ.get("HOMEKUBE_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("asyncssh").setLevel(logging.WARNING if level > logging.DEBUG else logging.INFO)


def run_async(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro`; with `timeout`, give up after that long (cancelling it closes the SSH
    channels, which stops whatever still runs on the hosts)."""
    async def bounded() -> T:
        try:
            async with asyncio.timeout(timeout):
                return await coro
        except TimeoutError:
            raise HomekubeError(
                f"gave up after --timeout {timeout:g} s; steps still running were stopped on the hosts",
                hint="run again to continue from where it stopped") from None

    return asyncio.run(bounded())


def guarded(fn: Callable[[], int | None]) -> None:
    """Run a command body; turn our errors into a message + hint + exit code."""
    _Run.log = None
    try:
        code = fn()
    except HomekubeError as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        if e.hint:
            err.print(f"hint: {e.hint}", markup=False, soft_wrap=True)
        if _Run.log_path() is not None:
            err.print(f"log: {_Run.log_path()}", markup=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted; steps still running were stopped on the hosts", markup=False)
        if _Run.log_path() is not None:
            err.print(f"log: {_Run.log_path()}", markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    raise typer.Exit(code or 0)


def load_config(path: Path) -> ClusterConfig:
    from homekube.config.loader import load, warnings_for
    from homekube.netnames import resolve

    cfg = load(path, resolve=resolve)
    for w in warnings_for(cfg):
        err.print(f"warning: {w}", markup=False, soft_wrap=True)
    return cfg


def with_step_timeout(cfg: ClusterConfig, seconds: int | None) -> ClusterConfig:
    """`--step-timeout` replaces every kind of cluster.yaml's `timeouts`."""
    if seconds is None:
        return cfg
    t = cfg.timeouts.model_copy(update={k: seconds for k in type(cfg.timeouts).model_fields})
    return cfg.model_copy(update={"timeouts": t})


def asker(view: Any = None) -> Callable[[str], bool] | None:
    """A yes/no question for a person at a terminal, or None when stdin is not one: a
    destructive verb then needs --yes (a pipe never says yes)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None

    def ask(question: str) -> bool:
        if view is not None:
            view.pause()  # the live panel would draw over the prompt
        return bool(typer.confirm(question, default=False, err=True))

    return ask


def version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"homekube {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Log details to stderr.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=version_callback, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    _setup_logging(debug)


@app.command(short_help="Print cluster.yaml's JSON Schema.")
def schema() -> None:
    """Print the JSON Schema of cluster.yaml (for editor completion)."""
    from homekube.config.model import ClusterConfig

    s = ClusterConfig.model_json_schema(by_alias=True)
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    s["title"] = "homekube cluster.yaml"
    sys.stdout.write(json.dumps(s, indent=2) + "\n")


@app.command(short_help="Print a starter cluster.yaml.")
def init(
    host: Annotated[
        list[str] | None,
        typer.Option("--host", metavar="ADDRESS",
                     help="IP address or DNS name of a host (repeatable); the first gets every role."),
    ] = None,
    name: Annotated[str, typer.Option(metavar="NAME", help="Cluster name.")] = "home",
) -> None:
    """Print a commented starter cluster.yaml."""
    from homekube.config.starter import starter

    def body() -> int:
        try:
            text = starter(name, host or [])
        except ValueError as e:
            raise UsageError(str(e), hint="e.g. --host 192.0.2.10 or --host server1.lan") from None
        sys.stdout.write(text)
        return 0

    guarded(body)


@app.command(short_help="Check cluster.yaml; contacts no host.")
def validate(config: ConfigOpt = DEFAULT_CONFIG, out: OutputOpt = "text") -> None:
    """Check cluster.yaml (schema, cross-checks, DNS names); no host is contacted."""
    def body() -> int:
        if out not in ("text", "json"):
            raise UsageError("--output must be text or json")
        cfg = load_config(config)
        roles = {r: sum(1 for h in cfg.hosts if h.has(r)) for r in ("control-plane", "etcd", "worker")}
        if out == "json":
            sys.stdout.write(json.dumps({"valid": True, "cluster": cfg.name, "hosts": len(cfg.hosts),
                                         "roles": roles}, indent=2) + "\n")
        else:
            console.print(f"{config}: valid; cluster {cfg.name}, {len(cfg.hosts)} host(s): "
                          f"{roles['control-plane']} control plane, {roles['etcd']} etcd, "
                          f"{roles['worker']} worker", markup=False)
        return 0

    guarded(body)


@app.command(short_help="Preflight every host; changes nothing.")
def check(config: ConfigOpt = DEFAULT_CONFIG, timeout: TimeoutOpt = None) -> None:
    """Check cluster.yaml and run preflight on every host; changes nothing."""
    from homekube.ops.session import open_session

    def body() -> int:
        cfg = load_config(config)

        async def go() -> int:
            s = await open_session(cfg, lock=False, enforce_preflight=False)
            try:
                code = output.print_check(console, s)
                await _disk_check(cfg, s)
                _expiry_check(cfg, s)
                return code
            finally:
                await s.close()

        return run_async(go(), timeout)

    guarded(body)


def _expiry_check(cfg: ClusterConfig, s: Any) -> None:
    """Warn about certificates expiring within etcd.renewWithinDays (from the facts gathered)."""
    from datetime import UTC, datetime

    from homekube.ops.certs import handed_out, host_expiries, window_days
    from homekube.pki.inventory import handed_out_rows, warnings

    now = datetime.now(UTC)
    rows = [e for h in cfg.hosts if h.name in s.facts
            for e in host_expiries(cfg, h, s.facts[h.name], now)]
    rows += handed_out_rows(handed_out(cfg), now)
    found = warnings(rows, window_days(cfg))
    for w in found:
        console.print(f"warning: {w}", markup=False, soft_wrap=True)
    if rows and not found:
        console.print(f"certificates: none expires within {window_days(cfg)} days "
                      "(etcd.renewWithinDays)", markup=False)


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


@app.command(short_help="Show what apply would change.")
def plan(
    config: ConfigOpt = DEFAULT_CONFIG,
    out: OutputOpt = "text",
    only: Annotated[str | None, typer.Option(metavar="PHASES",
                                             help="Comma-separated phases to plan.")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also the exact scripts and files, and what is unchanged.")] = False,
    detailed_exitcode: Annotated[bool, typer.Option(
        "--detailed-exitcode", help=f"Exit {EXIT_CHANGES} when changes are pending, 0 when none.")] = False,
    timeout: TimeoutOpt = None,
) -> None:
    """Show, per phase and host, every change apply would make."""
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
            return EXIT_CHANGES if detailed_exitcode and p.changes else 0

        return run_async(go(), timeout)

    guarded(body)


def open_runlog(cfg: ClusterConfig, verb: str) -> Any:
    """The run log of a command that changes hosts; its path is named if the command fails."""
    from homekube.ops.session import state_path
    from homekube.runlog import RunLog

    rl = RunLog(state_path(cfg), verb)
    _Run.log = rl
    return rl


def progress_to(view: Any, runlog: Any) -> Callable[[Any], None]:
    def emit(ev: Any) -> None:
        runlog.event(ev)
        view.event(ev)
    return emit


@app.command(short_help="Converge every host to cluster.yaml.")
def apply(
    config: ConfigOpt = DEFAULT_CONFIG,
    only: Annotated[str | None, typer.Option(metavar="PHASES",
                                             help="Comma-separated phases to run.")] = None,
    quiet: QuietOpt = False,
    timeout: TimeoutOpt = None,
    step_timeout: StepTimeoutOpt = None,
) -> None:
    """Converge every host to cluster.yaml; a second apply changes nothing."""
    from homekube.cli.progress import ProgressView
    from homekube.ops.apply import run_apply

    def body() -> int:
        phases = _only(only)
        cfg = with_step_timeout(load_config(config), step_timeout)
        t0 = time.monotonic()
        with open_runlog(cfg, "apply") as rl, ProgressView(quiet=quiet, title="apply") as view:
            return run_async(run_apply(cfg, console, phases=phases, progress=progress_to(view, rl),
                                       err=err, t0=t0), timeout)

    guarded(body)


@app.command(short_help="Hosts, etcd health, certificate lifetimes.")
def status(config: ConfigOpt = DEFAULT_CONFIG, out: OutputOpt = "text", timeout: TimeoutOpt = None) -> None:
    """Show hosts, etcd members and health, and certificate lifetimes.

    Exit 0 when every host answers and every etcd member is healthy, 3 when a host cannot
    be reached, 5 when etcd is unhealthy."""
    from homekube.ops.status import run_status

    def body() -> int:
        if out not in ("text", "json"):
            raise UsageError("--output must be text or json")
        cfg = load_config(config)
        return run_async(run_status(cfg, console, as_json=(out == "json")), timeout)

    guarded(body)


@app.command(short_help="Remove what homekube installed.")
def reset(
    config: ConfigOpt = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option("--host", metavar="HOST", help="Reset only this host.")] = None,
    yes: YesOpt = False,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Keep etcd data and backups.")] = False,
    quiet: QuietOpt = False,
    timeout: TimeoutOpt = None,
    step_timeout: StepTimeoutOpt = None,
) -> None:
    """Remove everything homekube installed (units, files, repos, data, packages it added).

    Shows what it would remove; then asks on a terminal, or needs --yes."""
    from homekube.cli.progress import ProgressView
    from homekube.ops.reset import run_reset

    def body() -> int:
        cfg = with_step_timeout(load_config(config), step_timeout)

        with open_runlog(cfg, "reset") as rl, ProgressView(quiet=quiet, title="reset") as view:
            return run_async(run_reset(cfg, console, host=host, yes=yes, keep_data=keep_data,
                                       progress=progress_to(view, rl), confirm=asker(view),
                                       show_plan=lambda p: output.print_plan(console, p)), timeout)

    guarded(body)


@app.command(short_help="Write every file for every host locally.")
def render(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory to write into.")],
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


@app.command(short_help="Print the version.")
def version(out: OutputOpt = "text") -> None:
    """Print homekube's version (and, with -o json, its Python and key libraries)."""
    def body() -> int:
        if out not in ("text", "json"):
            raise UsageError("--output must be text or json")
        if out == "text":
            sys.stdout.write(f"homekube {__version__}\n")
            return 0
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        libs: dict[str, str | None] = {}
        for lib in ("asyncssh", "pydantic", "typer", "rich", "cryptography"):
            try:
                libs[lib] = dist_version(lib)
            except PackageNotFoundError:
                libs[lib] = None
        data = {"version": __version__, "python": sys.version.split()[0], "libraries": libs}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0

    guarded(body)


@app.command(short_help="Print a bash, zsh or fish completion script.")
def completion(
    shell: Annotated[str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")],
) -> None:
    """Print a shell completion script, e.g. `source <(homekube completion bash)`."""
    # typer.completion re-exports these without declaring them (mypy strict); the same functions
    from typer._completion_shared import get_completion_script

    def body() -> int:
        if shell not in ("bash", "zsh", "fish"):
            raise UsageError(f"no completion for {shell!r}", hint="use bash, zsh or fish")
        sys.stdout.write(get_completion_script(prog_name="homekube", complete_var=COMPLETE_VAR,
                                               shell=shell).rstrip("\n") + "\n")
        return 0

    guarded(body)


#: set by the completion scripts when the shell asks for candidates
COMPLETE_VAR = "_HOMEKUBE_COMPLETE"


def main() -> None:
    if os.environ.get(COMPLETE_VAR):
        from typer._completion_classes import completion_init

        completion_init()  # the shells' answer formats, as the scripts expect them
    # one name in usage lines and for shell completion, however started
    app(prog_name="homekube")


if __name__ == "__main__":
    main()
