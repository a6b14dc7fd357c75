"""Options shared by every verb module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="cluster.yaml to use.")]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text or json.")]
DEFAULT_CONFIG = Path("cluster.yaml")
