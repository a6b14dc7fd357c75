"""`homekube kubeconfig` and `homekube ui`: reach the cluster from this machine over SSH."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from homekube.cli.options import DEFAULT_CONFIG as _DEFAULT
from homekube.cli.options import ConfigOpt as _ConfigOpt
from homekube.config.model import ClusterConfig
from homekube.errors import UsageError


def register(
    app: typer.Typer,
    guarded: Callable[[Callable[[], int | None]], None],
    load_config: Callable[[Path], ClusterConfig],
    console: Console,
) -> None:
    @app.command(short_help="Fetch the admin kubeconfig.")
    def kubeconfig(
        config: _ConfigOpt = _DEFAULT,
        out: Annotated[Path | None, typer.Option(
            "--out", metavar="FILE", help="Where to write it (default: <state dir>/kubeconfig).")] = None,
        server: Annotated[str | None, typer.Option(
            metavar="URL", help="API URL to put in it (default: https://<controlPlaneEndpoint>).")] = None,
        merge: Annotated[bool, typer.Option(
            "--merge", help="Merge into ~/.kube/config ($KUBECONFIG's first file, or --out) "
            "under a named context, keeping a copy of the old file.")] = False,
        context: Annotated[str | None, typer.Option(
            metavar="NAME", help="Context name for --merge (default: the cluster's name).")] = None,
    ) -> None:
        """Fetch the admin kubeconfig from the first control plane; write it here, mode 0600,
        or merge it into your kubeconfig; says when its credential expires."""
        from homekube.ops.kubernetes import default_merge_path, run_kubeconfig

        def body() -> int:
            if context is not None and not merge:
                raise UsageError("--context names the merged context: use it with --merge")
            cfg = load_config(config)
            target = (out or default_merge_path()) if merge else None
            return asyncio.run(run_kubeconfig(cfg, console, out=None if merge else out,
                                              server=server, merge=target, context=context))

        guarded(body)

    @app.command(short_help="Open Headlamp and print a login token.")
    def ui(
        config: _ConfigOpt = _DEFAULT,
        port: Annotated[int, typer.Option(
            metavar="PORT", help="Local port for Headlamp (0: any free one).")] = 4466,
        token_only: Annotated[bool, typer.Option(
            "--token-only", help="Print a fresh login token and exit (no forwarding).")] = False,
    ) -> None:
        """Open Headlamp through SSH and print a short-lived login token (Ctrl-C closes it)."""
        from homekube.ops.kubernetes import run_ui

        def body() -> int:
            cfg = load_config(config)
            try:
                return asyncio.run(run_ui(cfg, console, port=port, token_only=token_only))
            except KeyboardInterrupt:
                console.print("closed")
                return 0

        guarded(body)
