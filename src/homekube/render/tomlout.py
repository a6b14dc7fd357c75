"""Serialise data to TOML: the one writer for containerd's and cri-o's files.

A small typed writer instead of a dependency: the files homekube writes need tables, arrays of
tables, strings, booleans, integers and arrays of strings — nothing more. The rules:

* a table's plain keys come first, then its sub-tables (TOML requires that order);
* keys are bare when they can be (``A-Za-z0-9_-``), otherwise quoted basic strings, so
  containerd's ``plugins."io.containerd.cri.v1.images"`` comes out right;
* strings are basic strings, ASCII only (``\\uXXXX`` / ``\\UXXXXXXXX`` for the rest);
* a table with only sub-tables gets no header of its own (``[crio.runtime]``, no ``[crio]``);
  an empty table is still written (``[a.b]``), so the reader sees the structure given; a list
  of tables is an array of tables (``[[registry]]``);
* floats, ``None`` and mixed arrays are refused: nothing we render needs them.

Tests read every output back with :mod:`tomllib`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["dumps"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else _string(k)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _string(s: str) -> str:
    # TOML escapes code points, not UTF-16 units: JSON's surrogate pairs are invalid here
    out = []
    for ch in s:
        cp = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xD800 <= cp <= 0xDFFF:
            raise TypeError(f"{s!r}: a lone surrogate cannot be written to TOML")
        elif cp < 0x20 or cp == 0x7F or (cp > 0x7E and cp <= 0xFFFF):
            out.append(f"\\u{cp:04x}")
        elif cp > 0xFFFF:
            out.append(f"\\U{cp:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _is_table(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_table_array(v: Any) -> bool:
    return (isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0
            and all(isinstance(x, Mapping) for x in v))


def _value(v: Any, path: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, Sequence):
        items = list(v)
        kinds = {type(x) for x in items}
        if len(kinds) > 1:
            raise TypeError(f"{path}: mixed array")
        return "[" + ", ".join(_value(x, f"{path}[]") for x in items) + "]"
    raise TypeError(f"{path}: cannot write {type(v).__name__} to TOML")


def _table(data: Mapping[str, Any], header: list[str], out: list[str], *, array: bool = False) -> None:
    plain = [(k, v) for k, v in data.items() if not (_is_table(v) or _is_table_array(v))]
    nested = [(k, v) for k, v in data.items() if _is_table(v) or _is_table_array(v)]
    for k in data:
        if not isinstance(k, str):
            raise TypeError(f"{'.'.join(header)}: keys must be strings, not {type(k).__name__}")
    # a table holding only sub-tables is defined by their headers (no `[crio]` line)
    if header and (plain or not nested or array):
        if out:
            out.append("")
        name = ".".join(_key(h) for h in header)
        out.append(f"[[{name}]]" if array else f"[{name}]")
    for k, v in plain:
        out.append(f"{_key(k)} = {_value(v, '.'.join([*header, k]))}")
    for k, v in nested:
        if _is_table(v):
            _table(v, [*header, k], out)
        else:
            for item in v:
                _table(item, [*header, k], out, array=True)


def dumps(data: Mapping[str, Any]) -> str:
    """Write one TOML document."""
    out: list[str] = []
    _table(data, [], out)
    return "\n".join(out) + "\n"
