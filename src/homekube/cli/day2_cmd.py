"""Day-2 verbs for etcd: `backup`, `restore`, `certs` and `certs renew`.

    homekube backup [--out DIR]                  snapshot → <state>/backups/<cluster>-<UTC>.db
    homekube restore SNAPSHOT [--yes]            without --yes: print the plan only
    homekube certs [-o json]                     every etcd-side cert, CN, not-after, days left
    homekube certs renew [--within DAYS] [--yes] rolling re-issue, one member at a time
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from homekube.cli.options import DEFAULT_CONFIG, ConfigOpt, OutputOpt
from homekube.config.model import ClusterConfig
from homekube.errors import UsageError


def register(
    app: typer.Typer,
    guarded: Callable[[Callable[[], int | None]], None],
    load_config: Callable[[Path], ClusterConfig],
    console: Console,
) -> None:
    """Add the day-2 verbs to the main app."""

    @app.command()
    def backup(
        config: ConfigOpt = DEFAULT_CONFIG,
        out: Annotated[Path | None, typer.Option(
            "--out", help="Directory for the snapshot (default: <state dir>/backups).")] = None,
    ) -> None:
        """Snapshot etcd from a healthy member to this machine; prints the file's path last."""
        from homekube.ops.backup import run_backup

        def body() -> int:
            return asyncio.run(run_backup(load_config(config), console, out=out))

        guarded(body)

    @app.command()
    def restore(
        snapshot: Annotated[Path, typer.Argument(help="Snapshot file from `homekube backup`.")],
        config: ConfigOpt = DEFAULT_CONFIG,
        yes: Annotated[bool, typer.Option(
            "--yes", help="Really restore (stops etcd everywhere).")] = False,
    ) -> None:
        """Rebuild every etcd member from a snapshot; without --yes, print what it would do."""
        from homekube.ops.restore import run_restore

        def body() -> int:
            return asyncio.run(run_restore(load_config(config), console, snapshot, yes=yes))

        guarded(body)

    certs_app = typer.Typer(help="etcd certificates: list them, renew them.",
                            invoke_without_command=True, no_args_is_help=False)

    @certs_app.callback()
    def certs(
        ctx: typer.Context,
        config: ConfigOpt = DEFAULT_CONFIG,
        out: OutputOpt = "text",
    ) -> None:
        """List every etcd certificate (hosts, local CA, operator) with days left."""
        if ctx.invoked_subcommand is not None:
            ctx.obj = config  # `certs -c X renew` means renew with X
            return
        from homekube.ops.certs import run_list

        def body() -> int:
            if out not in ("text", "json"):
                raise UsageError("--output must be text or json")
            return asyncio.run(run_list(load_config(config), console, as_json=out == "json"))

        guarded(body)

    @certs_app.command()
    def renew(
        ctx: typer.Context,
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="cluster.yaml to use.")] = None,
        within: Annotated[int | None, typer.Option(
            "--within", help="Renew certs expiring within DAYS (default: etcd.renewWithinDays).",
            metavar="DAYS")] = None,
        yes: Annotated[bool, typer.Option(
            "--yes", help="Really renew (rolling etcd restarts).")] = False,
    ) -> None:
        """Re-issue etcd certs expiring soon, one member at a time, keeping quorum."""
        from homekube.ops.certs import run_renew

        def body() -> int:
            path = config or (ctx.obj if isinstance(ctx.obj, Path) else DEFAULT_CONFIG)
            return asyncio.run(run_renew(load_config(path), console, within=within, yes=yes))

        guarded(body)

    app.add_typer(certs_app, name="certs")
