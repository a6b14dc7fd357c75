"""`import asyncssh` without its liboqs probe, unless liboqs is actually installed.

At import, asyncssh looks for liboqs (for the sntrup761 key exchange) with
`ctypes.util.find_library('oqs')` and `('liboqs')`. On Linux each call runs `ldconfig -p`
and then gcc and ld: 28 processes and 20-65 ms on every homekube start, for a library that is
almost never there. ML-KEM comes from `cryptography` and is unaffected; when a liboqs shared
library exists in the usual places, the real probe runs as before.
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

_LIB_GLOBS = (("/usr/lib", "liboqs.so*"), ("/usr/lib", "*-linux-gnu/liboqs.so*"),
              ("/usr/lib64", "liboqs.so*"), ("/usr/local/lib", "liboqs.so*"),
              ("/lib", "*-linux-gnu/liboqs.so*"))
_real_find_library = ctypes.util.find_library


def _liboqs_present() -> bool:
    extra = [(d, "liboqs.so*") for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    return any(next(Path(d).glob(pat), None) for d, pat in (*_LIB_GLOBS, *extra))


def _find_library(name: str) -> str | None:
    if name in ("oqs", "liboqs") and not _liboqs_present():
        return None
    return _real_find_library(name)


ctypes.util.find_library = _find_library
try:
    import asyncssh
finally:
    ctypes.util.find_library = _real_find_library

__all__ = ["asyncssh"]
