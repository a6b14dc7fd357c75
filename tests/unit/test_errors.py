"""errors.py draws the whole exception tree: every HomekubeError subclass is in its docstring."""

from __future__ import annotations

import importlib
import pkgutil

import homekube
from homekube import errors


def _subclasses(cls: type) -> set[type]:
    out = set()
    for c in cls.__subclasses__():
        out |= {c, *_subclasses(c)}
    return out


def test_every_error_class_is_drawn_in_the_tree() -> None:
    for m in pkgutil.walk_packages(homekube.__path__, "homekube."):
        if ".lab.artifacts.modules" in m.name or m.name.endswith("__main__"):
            continue
        importlib.import_module(m.name)
    tree = errors.__doc__ or ""
    missing = sorted(c.__name__ for c in _subclasses(errors.HomekubeError)
                     if c.__module__.startswith("homekube") and f"── {c.__name__} " not in tree)
    assert not missing, f"not drawn in errors.py's docstring: {missing}"


def test_a_local_transport_that_cannot_start_its_shell_says_so_for_its_host() -> None:
    import asyncio

    import pytest

    from homekube.errors import ConnectError
    from homekube.transport.local import LocalTransport

    t = LocalTransport("here", sudo=False)
    t._argv = lambda: ["/nonexistent/bash", "-s"]  # type: ignore[method-assign]
    with pytest.raises(ConnectError, match="cannot start /nonexistent/bash") as e:
        asyncio.run(t.run("true"))
    assert e.value.host == "here"
