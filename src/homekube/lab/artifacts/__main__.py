"""Developer entry points: `python -m homekube.lab.artifacts module KEY` rewrites a wrapper
module (go.mod + go.sum) from its recipe; `build KEY` builds one recipe into the cache."""

from __future__ import annotations

import sys

from homekube.lab.artifacts import gobuild, recipes
from homekube.lab.system import LabError


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("module", "build"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        recipe = recipes.by_key(argv[1])
        if argv[0] == "module":
            print(gobuild.write_module(recipe, _progress))
        else:
            print(gobuild.ensure_built(recipe, _progress).dir)
    except (KeyError, LabError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
