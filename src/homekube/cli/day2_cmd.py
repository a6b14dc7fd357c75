"""Day-2 verbs for etcd: `backup`, `restore`, `certs` and `certs renew`.

    homekube backup [--out DIR]                  snapshot → <state>/backups/<cluster>-<UTC>.db
    homekube restore SNAPSHOT [--yes]            without --yes: the plan, then a question on a
                                                 terminal (elsewhere: nothing is changed)
    homekube certs [-o json]                     every cert (etcd, kubeadm, kubelet, handed-out
                                                 kubeconfigs), CN, not-after, days left
    homekube certs renew [--within DAYS] [--yes] rolling re-issue, one etcd member, then one
                                                 control plane at a time
    homekube backup --verify FILE [--on HOST]    restore FILE into a scratch dir on a host, count keys
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from homekube.cli.options import (
    DEFAULT_CONFIG,
    ConfigOpt,
    OutputOpt,
    QuietOpt,
    StepTimeoutOpt,
    TimeoutOpt,
)
from homekube.config.model import ClusterConfig
from homekube.errors import UsageError


def register(
    app: typer.Typer,
    guarded: Callable[[Callable[[], int | None]], None],
    load_config: Callable[[Path], ClusterConfig],
    console: Console,
) -> None:
    """Add the day-2 verbs to the main app."""

    from homekube.cli.main import asker, open_runlog, progress_to, run_async, with_step_timeout
    from homekube.cli.progress import ProgressView

    @app.command(short_help="Snapshot etcd to this machine.")
    def backup(
        config: ConfigOpt = DEFAULT_CONFIG,
        out: Annotated[Path | None, typer.Option(
            "--out", metavar="DIR", help="Directory for the snapshot (default: <state dir>/backups).")] = None,
        verify: Annotated[Path | None, typer.Option(
            "--verify", metavar="FILE", help="Take no snapshot: restore FILE into a scratch "
            "directory on one etcd host, count its keys, compare with its sidecar.")] = None,
        on: Annotated[str | None, typer.Option(
            "--on", metavar="HOST", help="With --verify: the etcd host to restore on.")] = None,
        quiet: QuietOpt = False,
        timeout: TimeoutOpt = None,
    ) -> None:
        """Snapshot etcd from a healthy member to this machine; prints the file's path last.
        With --verify FILE: prove FILE restores, without touching the cluster."""
        from homekube.ops.backup import run_backup, run_verify

        def body() -> int:
            cfg = load_config(config)
            if verify is not None:
                if out is not None:
                    raise UsageError("--verify takes no snapshot: drop --out")
                return run_async(run_verify(cfg, console, verify, host=on), timeout)
            if on is not None:
                raise UsageError("--on goes with --verify")
            with ProgressView(quiet=quiet, title="backup") as view:
                return run_async(run_backup(cfg, console, out=out, progress=view.event), timeout)

        guarded(body)

    @app.command(short_help="Restore every etcd member from a snapshot.")
    def restore(
        snapshot: Annotated[Path, typer.Argument(metavar="SNAPSHOT",
                                                 help="Snapshot file from `homekube backup`.")],
        config: ConfigOpt = DEFAULT_CONFIG,
        yes: Annotated[bool, typer.Option(
            "--yes", "-y", help="Really restore (stops etcd everywhere); needed when stdin is not "
            "a terminal.")] = False,
        quiet: QuietOpt = False,
        timeout: TimeoutOpt = None,
        step_timeout: StepTimeoutOpt = None,
    ) -> None:
        """Rebuild every etcd member from a snapshot; shows what it would do, then asks on a
        terminal (or needs --yes)."""
        from homekube.ops.restore import run_restore

        def body() -> int:
            cfg = with_step_timeout(load_config(config), step_timeout)
            with open_runlog(cfg, "restore") as rl, ProgressView(quiet=quiet, title="restore") as view:
                return run_async(run_restore(cfg, console, snapshot, yes=yes, progress=progress_to(view, rl),
                                             confirm=asker(view)), timeout)

        guarded(body)

    certs_app = typer.Typer(help="Certificates (etcd, kubeadm, kubelet, kubeconfigs): list, renew.",
                            invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None)

    @certs_app.callback()
    def certs(
        ctx: typer.Context,
        config: ConfigOpt = DEFAULT_CONFIG,
        out: OutputOpt = "text",
    ) -> None:
        """List every certificate (etcd, kubeadm, kubelet, handed-out kubeconfigs) with days left."""
        if ctx.invoked_subcommand is not None:
            ctx.obj = config  # `certs -c X renew` means renew with X
            return
        from homekube.ops.certs import run_list

        def body() -> int:
            if out not in ("text", "json"):
                raise UsageError("--output must be text or json")
            return run_async(run_list(load_config(config), console, as_json=out == "json"))

        guarded(body)

    @certs_app.command(short_help="Renew etcd and kubeadm certificates expiring soon.")
    def renew(
        ctx: typer.Context,
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", envvar="HOMEKUBE_CONFIG", metavar="FILE",
            help="cluster.yaml to use.")] = None,
        within: Annotated[int | None, typer.Option(
            "--within", help="Renew certs expiring within DAYS (default: etcd.renewWithinDays).",
            metavar="DAYS")] = None,
        yes: Annotated[bool, typer.Option(
            "--yes", "-y", help="Really renew (rolling etcd restarts); needed when stdin is not a "
            "terminal.")] = False,
        quiet: QuietOpt = False,
        timeout: TimeoutOpt = None,
        step_timeout: StepTimeoutOpt = None,
    ) -> None:
        """Re-issue etcd and kubeadm certs expiring soon: one etcd member, then one control
        plane, at a time."""
        from homekube.ops.certs import run_renew

        def body() -> int:
            path = config or (ctx.obj if isinstance(ctx.obj, Path) else DEFAULT_CONFIG)
            cfg = with_step_timeout(load_config(path), step_timeout)
            with open_runlog(cfg, "certs-renew") as rl, ProgressView(quiet=quiet, title="certs renew") as view:
                return run_async(run_renew(cfg, console, within=within, yes=yes,
                                           progress=progress_to(view, rl), confirm=asker(view)), timeout)

        guarded(body)

    app.add_typer(certs_app, name="certs")
