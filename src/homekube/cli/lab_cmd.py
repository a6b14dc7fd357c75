"""`homekube lab ...`: local test hosts for trying homekube without spare machines."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from homekube.errors import HomekubeError

app = typer.Typer(
    help="Local test hosts (systemd-nspawn machines with sshd) on this machine; needs root.",
    no_args_is_help=True,
)

_err = Console(stderr=True)
_out = Console()
T = TypeVar("T")


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never break a command
            self.handleError(record)


def _progress_logging() -> None:
    """Show the lab's progress lines (debootstrap, boots) unless the caller set logging up."""
    logger = logging.getLogger("homekube.lab")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s lab: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _stderr_progress(what: str, t0: float) -> Callable[[str], None]:
    """Progress lines on stderr with the time since t0: a cold artifact build takes minutes."""

    def progress(line: str) -> None:
        m, s = divmod(int(time.monotonic() - t0), 60)
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {what} [{m}:{s:02d}]: {line}\n")
        sys.stderr.flush()

    return progress


def _guard(action: Callable[[], T]) -> T:
    """Turn lab errors into a message, a hint and an exit code; never a traceback."""
    _progress_logging()
    try:
        return action()
    except HomekubeError as e:
        # escape: messages quote console logs, whose "[...]" rich would take for markup
        _err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        if e.hint:
            _err.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        _err.print("interrupted; `homekube lab down` cleans up whatever was started")
        raise typer.Exit(130) from None


@app.command("up")
def up_cmd(
    n: Annotated[int, typer.Argument(help="number of hosts (h1..hN)", min=1)],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="where to write the lab's cluster.yaml")
    ] = Path("homekube-lab.yaml"),
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes",
            help="also build (first time 15-30 min) and publish the Kubernetes artifacts and "
            "start the lab registry",
        ),
    ] = False,
) -> None:
    """Start N hosts (builds the base image first when needed) and write a cluster.yaml."""
    from homekube import lab

    t0 = time.monotonic()
    progress = _stderr_progress("lab up", t0)
    result = _guard(
        lambda: lab.up(n, config_path=config, kubernetes=kubernetes, progress=progress)
    )
    typer.echo(
        f"lab up: {len(result.hosts)} host(s) in {time.monotonic() - t0:.1f} s; "
        f"config written to {config}"
    )
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


@app.command("down")
def down_cmd() -> None:
    """Stop every host and remove the bridge, namespaces, firewall table and daemons."""
    from homekube import lab

    _guard(lab.down)


@app.command("status")
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


@app.command("build")
def build_cmd(
    force: Annotated[
        bool, typer.Option("--force", help="debootstrap again even if cached")
    ] = False,
) -> None:
    """Build (or re-configure) the cached base image the hosts boot from (~70 s when new)."""
    from homekube import lab

    path = _guard(lambda: lab.build(force=force))
    typer.echo(f"base image ready: {path}")


@app.command("artifacts")
def artifacts_cmd(
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="build only this component (repeatable): kubernetes, etcd, cri-tools, coredns, "
            "containerd, runc, cni-plugins, flannel-cni-plugin, flannel, pause",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="rebuild even what is cached")
    ] = False,
) -> None:
    """Build the lab's Kubernetes artifacts from Go modules (what is missing) and publish them.

    Binaries, release tarballs, .debs and images are cached under
    /var/cache/homekube/lab-artifacts; with the lab up, they also go into its mirror, its
    apt repository (kubernetes/v1.X/deb/) and its registry. A cold build takes 15-30 min
    (21 CPU-minutes on 2 cores); a cached run, under a second.
    """
    from homekube.lab import artifacts

    t0 = time.monotonic()
    progress = _stderr_progress("artifacts", t0)
    report = _guard(lambda: artifacts.run(progress, only=only, force=force))
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
