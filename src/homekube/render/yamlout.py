"""Serialise data for machines to read: one YAML writer for every file homekube renders.

Why not ``yaml.dump``: Kubernetes reads YAML with a YAML 1.1 flavoured parser (go-yaml v2 via
sigs.k8s.io/yaml), where ``on``, ``yes``, ``y``, ``n``, ``off``, ``~``, ``0755`` (octal),
``1_000`` and ``12:30`` (base 60) are not strings. A YAML 1.2 writer leaves those unquoted
because in 1.2 they *are* strings, and the reader gets a bool or a number instead
(style.md habit 6: "YAML written by hand is a bug waiting for ``on: yes``").

The rules here:

* block style everywhere (empty containers become ``[]`` / ``{}``, which is how an explicit
  empty list such as kubeadm's ``taints: []`` is written);
* a string is double-quoted whenever a YAML 1.1 *or* 1.2 reader could resolve its plain form
  to anything but a string (checked with ruamel's resolvers for both versions plus our own
  YAML 1.1 patterns, so a quirk in one of them does not slip through);
* mappings keep the insertion order of the data given (renderers build them in the order
  upstream documents use), so the output is stable byte for byte;
* several documents are joined with ``---`` lines.

Only ``dict``, ``list``/``tuple``, ``str``, ``bool``, ``int`` and ``None`` are accepted; floats
are refused because nothing we render needs one and their text form is a portability trap.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

__all__ = ["dump", "dump_all", "needs_quotes"]

_STR_TAG = "tag:yaml.org,2002:str"
_RESOLVERS = (VersionedResolver(version=(1, 1)), VersionedResolver(version=(1, 2)))

# The YAML 1.1 type repository (yaml.org/type/*.html), written out independently of ruamel so
# that the two checks guard each other. Matched against the whole string.
_YAML11_PATTERNS = tuple(
    re.compile(p)
    for p in (
        # bool: y|Y|yes|Yes|YES|n|N|no|No|NO|true|...|on|On|ON|off|Off|OFF
        r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
        # null
        r"~|null|Null|NULL|",
        # int: binary, octal, decimal, hex, base 60 (underscores allowed)
        r"[-+]?0b[0-1_]+",
        r"[-+]?0[0-7_]+",
        r"[-+]?(0|[1-9][0-9_]*)",
        r"[-+]?0x[0-9a-fA-F_]+",
        r"[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+",
        # float: decimal, base 60, infinity, not-a-number
        r"[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?",
        r"[-+]?[0-9][0-9_]*([eE][-+]?[0-9]+)",
        r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*",
        r"[-+]?\.(inf|Inf|INF)",
        r"\.(nan|NaN|NAN)",
        # timestamp
        r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \t]+)?.*",
        # merge key and value key
        r"<<",
        r"=",
    )
)


def needs_quotes(text: str) -> bool:
    """Say whether ``text`` written plain could be read back as something other than a string."""
    for pattern in _YAML11_PATTERNS:
        if pattern.fullmatch(text):
            return True
    return any(str(r.resolve(ScalarNode, text, (True, False))) != _STR_TAG for r in _RESOLVERS)


def _prepare(value: Any, path: str) -> Any:
    """Copy ``value`` into ruamel's types, quoting every string that is a YAML trap."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return DoubleQuotedScalarString(value) if needs_quotes(value) else value
    if isinstance(value, Mapping):
        out = CommentedMap()
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: mapping keys must be strings, not {type(key).__name__}")
            out[_prepare(key, path)] = _prepare(item, f"{path}.{key}")
        return out
    if isinstance(value, Sequence):
        return CommentedSeq(_prepare(item, f"{path}[{i}]") for i, item in enumerate(value))
    raise TypeError(f"{path}: cannot write {type(value).__name__} to YAML")


def _writer() -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=2, offset=0)
    yaml.width = 4096  # never fold long values (tokens, hashes, URLs) onto a second line
    # ASCII only: anything else is escaped inside double quotes. Besides being safe for every
    # reader, it keeps YAML 1.1 line breaks (NEL U+0085, U+2028, U+2029) from being written
    # raw inside a quoted scalar, where a 1.1 reader folds them into spaces.
    yaml.allow_unicode = False
    yaml.representer.add_representer(type(None), _represent_null)
    return yaml


def _represent_null(representer: Any, _data: None) -> Any:
    # the round-trip writer would print nothing at all for None; say ``null`` explicitly
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def dump(data: Mapping[str, Any] | Sequence[Any]) -> str:
    """Write one YAML document (no leading ``---``)."""
    buf = io.StringIO()
    _writer().dump(_prepare(data, "$"), buf)
    return buf.getvalue()


def dump_all(documents: Iterable[Mapping[str, Any]]) -> str:
    """Write several YAML documents separated by ``---`` lines."""
    return "---\n".join(dump(doc) for doc in documents)
