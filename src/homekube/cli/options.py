"""Options shared by every verb module, so each means the same everywhere.

`-c/--config` (or HOMEKUBE_CONFIG) is the cluster.yaml; `-o/--output` is always the output
format; a file or directory to write is `--out`; `-q/--quiet` silences progress (stderr);
`--timeout` bounds a whole command, `--step-timeout` every remote step of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path, typer.Option(
    "--config", "-c", envvar="HOMEKUBE_CONFIG", show_envvar=True, metavar="FILE",
    help="cluster.yaml to use.")]
OutputOpt = Annotated[str, typer.Option("--output", "-o", metavar="FORMAT", help="text or json.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", metavar="SECONDS", min=1,
    help="Give up after this long; steps still running are stopped on the hosts.")]
StepTimeoutOpt = Annotated[int | None, typer.Option(
    "--step-timeout", metavar="SECONDS", min=5,
    help="Limit for every remote step (instead of cluster.yaml's `timeouts`).")]
YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help="Do it without asking (needed when stdin is not a terminal).")]
DEFAULT_CONFIG = Path("cluster.yaml")
