"""`homekube lab ...`: local test hosts for trying homekube without spare machines."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from homekube.cli.options import QuietOpt
from homekube.cli.progress import LabLogHandler, ProgressView
from homekube.errors import HomekubeError, UsageError

app = typer.Typer(
    help="Local test hosts (systemd-nspawn machines with sshd) on this machine; needs root.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_err = Console(stderr=True)
_out = Console()
T = TypeVar("T")
#: the first line `lab up` writes into its cluster.yaml (clusteryaml.render)
LAB_HEADER = "# homekube lab:"


def _guard(action: Callable[[], T], *, quiet: bool = False, title: str = "lab") -> T:
    """Run a lab action with its log lines as progress on stderr; turn lab errors into a
    message, a hint and an exit code, never a traceback."""
    logger = logging.getLogger("homekube.lab")
    with ProgressView(quiet=quiet, title=title) as view:
        handler = LabLogHandler(view)
        logger.addHandler(handler)
        # the CLI's root logger (set up first, at WARNING) would otherwise swallow them
        old_level, old_propagate = logger.level, logger.propagate
        logger.setLevel(logging.INFO)
        logger.propagate = logging.getLogger().level <= logging.DEBUG
        try:
            return action()
        except HomekubeError as e:
            view.close()
            # escape: messages quote console logs, whose "[...]" rich would take for markup
            _err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            if e.hint:
                _err.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            view.close()
            _err.print("interrupted; `homekube lab down` cleans up whatever was started")
            raise typer.Exit(130) from None
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate


def _refuse_foreign(config: Path) -> None:
    """A file at `config` that `lab up` did not write is never touched (exit 2, nothing done)."""
    try:
        first = config.read_text(errors="replace").split("\n", 1)[0]
    except FileNotFoundError:
        return
    except OSError as e:
        raise UsageError(f"cannot read {config}: {e}") from None
    if not first.startswith(LAB_HEADER):
        raise UsageError(f"{config} exists and was not written by `homekube lab up`; nothing was done",
                         hint="pass another --config path for the lab's cluster.yaml")


def _write_config(result: Any, config: Path, *, force: bool) -> str:
    """Write the lab's cluster.yaml unless an edited one is there; say what happened."""
    from homekube import lab
    from homekube.lab.system import LabError

    with tempfile.TemporaryDirectory() as d:
        fresh = lab.write_config(result, Path(d) / "lab.yaml").read_text()
    try:
        old: str | None = config.read_text()
    except FileNotFoundError:
        old = None
    if old == fresh:
        return f"{config} is up to date"
    if old is not None and not force:
        raise LabError(
            f"{config} differs from the config `lab up` writes (edited since?); it was left as it is "
            "(the hosts are up)",
            hint="keep using it, or pass --force to write a fresh one (the old one is kept as a backup)",
        )
    note = ""
    if old is not None:
        backup = config.with_name(config.name + f".{time.strftime('%Y%m%dT%H%M%S')}.bak")
        shutil.copy2(config, backup)
        note = f" (the old one is kept as {backup})"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(fresh)
    return f"config written to {config}{note}"


@app.command("up", short_help="Start N hosts and write their cluster.yaml.")
def up_cmd(
    n: Annotated[int, typer.Argument(metavar="N", help="number of hosts (h1..hN)", min=1)],
    config: Annotated[
        Path, typer.Option("--config", "-c", envvar="HOMEKUBE_CONFIG", metavar="FILE",
                           help="where to write the lab's cluster.yaml")
    ] = Path("homekube-lab.yaml"),
    kubernetes: Annotated[bool, typer.Option(
        "--kubernetes",
        help="Also build (first time 15-30 min) and publish the Kubernetes artifacts, start the "
        "lab registry and write a cluster.yaml with the Kubernetes layer on.")] = False,
    kubernetes_version: Annotated[str | None, typer.Option(
        "--kubernetes-version", metavar="MINOR",
        help="With --kubernetes: the minor the cluster.yaml names (1.35 or 1.36, the default); "
        "with 1.35, 1.36 is built and published too, so 1.35 can be upgraded to 1.36.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite an edited config (a backup of it is kept).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Start N hosts (builds the base image first when needed) and write a cluster.yaml.

    An existing config that `lab up` did not write is never touched; one it wrote but that
    was edited since is kept unless --force."""
    from homekube import lab

    t0 = time.monotonic()

    def go() -> tuple[Any, str]:
        _refuse_foreign(config)
        result = lab.up(n, kubernetes=kubernetes or kubernetes_version is not None,
                        kubernetes_version=kubernetes_version)
        return result, _write_config(result, config, force=force)

    result, said = _guard(go, quiet=quiet, title=f"lab up {n}")
    typer.echo(f"lab up: {len(result.hosts)} host(s) in {time.monotonic() - t0:.1f} s; {said}")
    if result.artifacts is not None:
        a = result.artifacts
        typer.echo(
            f"Kubernetes {a.kubernetes_version}: apt {a.apt_repo_url}  registry {a.registry}"
        )
    for h in result.hosts:
        typer.echo(f"  {h.name}  {h.ipv4}  {h.ipv6}")
    typer.echo(
        f"ssh: ssh -i {result.key_path} -o UserKnownHostsFile={result.known_hosts_path} "
        f"root@{result.hosts[0].ipv4}"
    )


@app.command("down", short_help="Stop every host and remove what up created.")
def down_cmd(quiet: QuietOpt = False) -> None:
    """Stop every host and remove the bridge, namespaces, firewall table and daemons."""
    from homekube import lab

    t0 = time.monotonic()
    _guard(lab.down, quiet=quiet, title="lab down")
    typer.echo(f"lab down: hosts stopped and removed ({time.monotonic() - t0:.1f} s)")


@app.command("status", short_help="List the lab's hosts.")
def status_cmd() -> None:
    """List the lab's hosts with their addresses and state."""
    from homekube import lab

    st = _guard(lab.status)
    if not st.hosts:
        typer.echo(f"no lab hosts (lab dir {st.dir})")
        return
    table = Table(title=f"homekube lab ({st.dir})")
    for col in ("host", "ipv4", "ipv6", "state", "memory"):
        table.add_column(col)
    for h in st.hosts:
        mem = f"{h.memory_bytes / 2**20:.0f} MiB" if h.memory_bytes is not None else "-"
        table.add_row(h.name, h.ipv4, h.ipv6, h.state, mem)
    _out.print(table)
    typer.echo(
        f"mirror {st.mirror_url}: {'running' if st.mirror_running else 'stopped'}   "
        f"Debian repository: {st.apt_repo_url or 'not built'}   "
        f"registry {st.registry_host}: {'running' if st.registry_running else 'stopped'}"
    )
    if st.key_path and st.known_hosts_path:
        typer.echo(
            f"ssh: ssh -i {st.key_path} -o UserKnownHostsFile={st.known_hosts_path} root@<ip>"
        )
    for note in st.notes:
        typer.echo(f"note: {note}")


@app.command("build", short_help="Build the base image the hosts boot from.")
def build_cmd(
    force: Annotated[
        bool, typer.Option("--force", help="debootstrap again even if cached")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Build (or re-configure) the cached base image the hosts boot from (~70 s when new)."""
    from homekube import lab

    path = _guard(lambda: lab.build(force=force), quiet=quiet, title="lab build")
    typer.echo(f"base image ready: {path}")


@app.command("artifacts", short_help="Build the lab's Kubernetes artifacts from Go modules.")
def artifacts_cmd(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="build only this component (repeatable): kubernetes, etcd, cri-tools, coredns, "
            "containerd, runc, cni-plugins, flannel-cni-plugin, flannel, hkecho, pause",
        ),
    ] = None,
    kubernetes_version: Annotated[
        list[str] | None,
        typer.Option(
            "--kubernetes-version", metavar="MINOR",
            help="only this Kubernetes minor's release (repeatable: 1.36, 1.35): its "
            "Kubernetes, pause and CoreDNS, plus the components every minor shares; "
            "default: every minor the lab builds",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="rebuild even what is cached")
    ] = False,
    no_publish: Annotated[
        bool, typer.Option("--no-publish", help="build and pack only; leave the lab alone "
                           "(e.g. a build in the background while the lab runs tests)")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Build the lab's Kubernetes artifacts from Go modules (what is missing) and publish them.

    Binaries, release tarballs, .debs and images are cached under
    /var/cache/homekube/lab-artifacts; with the lab up, they also go into its mirror, its
    apt repository (kubernetes/v1.X/deb/) and its registry. A cold build takes 15-30 min
    per Kubernetes minor on 2 cores; a cached run, about a second. While another process
    builds an artifact this one needs, it waits for that build and takes its result.
    """
    from homekube.lab import artifacts
    from homekube.lab.system import log, stop_on_sigterm

    t0 = time.monotonic()

    def progress(line: str) -> None:
        log.info("%s", line)

    stop_on_sigterm()  # a killed build stops its go build too (it runs in its own session)
    report = _guard(lambda: artifacts.run(progress, only=only, minors=kubernetes_version,
                                          force=force, publish=not no_publish),
                    quiet=quiet, title="lab artifacts")
    worked = {k: v for k, v in report.steps.items() if v >= 0.5}
    for step, seconds in worked.items():
        typer.echo(f"  {step}: {seconds:.0f} s")
    for note in report.notes:
        typer.echo(f"note: {note}")
    cached = len(report.steps) - len(worked)
    typer.echo(
        f"artifacts ready in {time.monotonic() - t0:.1f} s "
        f"({len(worked)} step(s) did work, {cached} cached)"
    )
