"""Load cluster.yaml into a ClusterConfig, reporting every problem with file:line:column.

Pydantic tells us *what* is wrong by a path of keys and indexes; ruamel.yaml's round-trip
loader remembers where each key and item stood in the file. Joining the two gives messages
an editor can jump to. Semantic checks that span several fields (overlapping networks,
duplicate hosts, dual-stack needs) run after the schema and are located the same way.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from homekube.config.checks import feature_checks, read_ca_files
from homekube.config.model import ClusterConfig, HostSpec
from homekube.errors import ConfigError, ConfigProblem

Loc = tuple[str | int, ...]
#: name -> its addresses (IPv4 first); raises LookupError saying why it has none
Resolver = Callable[[str], list[str]]

_DNS_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*\.?")


def _to_plain(node: Any) -> Any:
    """Turn ruamel's commented containers into plain dicts/lists for pydantic."""
    if isinstance(node, CommentedMap | dict):
        return {str(k) if not isinstance(k, str) else k: _to_plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq | list):
        return [_to_plain(v) for v in node]
    return node


def locate(root: Any, loc: Sequence[str | int], *, key_only: bool = False) -> tuple[int, int]:
    """Return the 1-based line and column of the deepest node on `loc` that exists (of the
    key itself with `key_only`, e.g. for an unknown key)."""
    line, col = 1, 1
    node = root
    for n, key in enumerate(loc):
        if isinstance(node, CommentedMap) and key in node:
            try:
                ln, cl = node.lc.key(key)
            except (KeyError, TypeError, AttributeError):
                break
            line, col = ln + 1, cl + 1
            child = node[key]
            # point at the value when it is a scalar on the same line as the key
            if not isinstance(child, CommentedMap | CommentedSeq) and not (key_only and n == len(loc) - 1):
                try:
                    vl, vc = node.lc.value(key)
                    line, col = vl + 1, vc + 1
                except (KeyError, TypeError, AttributeError):
                    pass
            node = child
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            try:
                ln, cl = node.lc.item(key)
            except (KeyError, TypeError, AttributeError):
                break
            line, col = ln + 1, cl + 1
            node = node[key]
        else:
            break
    return line, col


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The config model that holds the keys at `loc` (None when that is no model)."""
    from homekube.config.model import ClusterConfig

    model: type[BaseModel] = ClusterConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for name, f in model.model_fields.items()
                      if part in (name, f.alias, to_camel(name))), None)
        if field is None:
            return None
        sub = _submodel(field.annotation)
        if sub is None:
            return None
        model = sub
    return model


def _submodel(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        sub = _submodel(arg)
        if sub is not None:
            return sub
    return None


def _did_you_mean(loc: Sequence[str | int]) -> str:
    if not loc or not isinstance(loc[-1], str):
        return ""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    keys = [f.alias or to_camel(n) for n, f in model.model_fields.items()]
    lower = {k.lower(): k for k in keys}
    close = difflib.get_close_matches(loc[-1].lower(), list(lower), n=1, cutoff=0.6)
    return f"; did you mean {lower[close[0]]!r}?" if close else ""


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key" + _did_you_mean(_clean_loc(err.get("loc", ())))
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        return "must be a lowercase DNS label (a-z, 0-9 and '-', at most 63 characters)"
    if kind in ("ip_v4_address", "ip_v6_address"):
        return "not a valid IP address"
    if kind in ("ip_v4_network", "ip_v6_network"):
        return f"not a valid network (CIDR, host bits zero): {err.get('input')!r}"
    if kind == "too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _clean_loc(loc: Sequence[Any]) -> Loc:
    """Drop pydantic's union-branch labels (e.g. 'IPv4Address') from a location."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int):
            out.append(part)
        elif isinstance(part, str) and (
            part[:1].isupper() or "[" in part or part.startswith("function-")
        ):
            continue
        else:
            out.append(part)
    return tuple(out)


def _is_dns_name(text: str) -> bool:
    """A host name by RFC 1123 whose last label is not all digits (so 10.0.0.300 is not)."""
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        return False
    return not text.rstrip(".").rsplit(".", 1)[-1].isdigit()


def _resolve_hosts(plain: dict[str, Any], resolve: Resolver | None) -> tuple[dict[int, str], list[tuple[Loc, str]]]:
    """Replace DNS names in hosts[].address/address6 by what they resolve to, in place.

    Returns ({host index: name}, problems). Without `resolve` (pure callers) a name is left
    for the schema to reject.
    """
    names: dict[int, str] = {}
    problems: list[tuple[Loc, str]] = []
    hosts = plain.get("hosts")
    if not isinstance(hosts, list):
        return names, problems
    for i, h in enumerate(hosts):
        if not isinstance(h, dict):
            continue
        for field, family in (("address", None), ("address6", 6)):
            v = h.get(field)
            if not isinstance(v, str) or not v.strip():
                continue
            v = v.strip()
            try:
                ipaddress.ip_address(v)
                continue
            except ValueError:
                pass
            if not _is_dns_name(v):
                what = "not a valid IP address" if re.fullmatch(r"[\d.:]+|.*:.*", v) else \
                    "neither an IP address nor a DNS name"
                problems.append((("hosts", i, field), f"{v!r} is {what}"))
                continue
            if resolve is None:
                continue
            try:
                found = [a for a in resolve(v) if family is None or ipaddress.ip_address(a).version == family]
            except LookupError as e:
                problems.append((("hosts", i, field), f"the DNS name {v!r} does not resolve ({e})"))
                continue
            if not found:
                problems.append((("hosts", i, field), f"the DNS name {v!r} has no IPv6 address"))
                continue
            h[field] = found[0]
            if field == "address":
                names[i] = v.rstrip(".")
    return names, problems


def load_text(text: str, filename: str = "cluster.yaml", *, resolve: Resolver | None = None) -> ClusterConfig:
    """Parse and validate a config document; raise ConfigError with every problem.

    With `resolve`, hosts[].address (and address6) may be DNS names: each is replaced by
    the address it resolves to, and SSH goes on using the name (HostSpec.dns_name).
    """
    root = _parse_yaml(text, filename)
    problems: list[ConfigProblem] = []
    seen: set[tuple[Loc, str]] = set()
    try:
        plain = _to_plain(root)
    except RecursionError:
        raise ConfigError([ConfigProblem(filename, 1, 1, "", "the document is nested too deeply")]) from None
    names, name_problems = _resolve_hosts(plain, resolve) if isinstance(plain, dict) else ({}, [])
    for loc, msg in name_problems:
        line, col = locate(root, loc)
        problems.append(ConfigProblem(filename, line, col, _path(loc), msg))
        seen.add((loc, "not a valid IP address"))
    try:
        cfg = ClusterConfig.model_validate(plain)
    except ValidationError as e:
        raise ConfigError(_tidy([*problems, *_validation_problems(e, root, filename, seen)])) from None

    # caFile is read here, where the config file's directory is known (config/checks.py)
    cfg, unreadable = read_ca_files(cfg, Path(filename).parent)
    for loc, msg in unreadable:
        line, col = locate(root, loc)
        problems.append(ConfigProblem(filename, line, col, _path(loc), msg))
    if problems:
        problems.sort(key=lambda p: (p.line, p.column))
        raise ConfigError(problems)
    for i, name in names.items():
        cfg.hosts[i].set_dns_name(name)
    warnings: list[ConfigProblem] = []
    for loc, msg, is_warning in [*semantic_checks(cfg), *feature_checks(cfg)]:
        line, col = locate(root, loc)
        p = ConfigProblem(filename, line, col, _path(loc), msg, warning=is_warning)
        (warnings if is_warning else problems).append(p)
    if problems:
        problems.sort(key=lambda p: (p.line, p.column))
        raise ConfigError(problems)
    _WARNINGS[id(cfg)] = warnings
    return cfg


def _parse_yaml(text: str, filename: str) -> CommentedMap:
    """The document's top-level mapping, or a ConfigError saying where the YAML breaks."""
    yaml = YAML(typ="rt")
    try:
        root = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        msg = f"YAML syntax: {e.problem or e.context or 'cannot parse'}"
        raise ConfigError([ConfigProblem(filename, line, col, "", msg)]) from None
    except YAMLError as e:  # e.g. duplicate keys without a mark
        raise ConfigError([ConfigProblem(filename, 1, 1, "", f"YAML: {e}")]) from None
    except RecursionError:  # the parser recurses once per nesting level
        raise ConfigError([ConfigProblem(filename, 1, 1, "", "the document is nested too deeply")]) from None
    if root is None:
        raise ConfigError([ConfigProblem(filename, 1, 1, "", "the file is empty")])
    if not isinstance(root, CommentedMap):
        raise ConfigError(
            [ConfigProblem(filename, 1, 1, "", "the top level must be a mapping of keys")]
        )
    return root


def _validation_problems(e: ValidationError, root: CommentedMap, filename: str,
                         seen: set[tuple[Loc, str]]) -> list[ConfigProblem]:
    """pydantic's errors as located problems, without those already reported in `seen`."""
    problems: list[ConfigProblem] = []
    for err in e.errors():
        loc = _clean_loc(err["loc"])
        msg = _message(dict(err))
        if (loc, msg) in seen or ((loc, "not a valid IP address") in seen and "valid IP" in msg):
            continue
        seen.add((loc, msg))
        line, col = locate(root, loc, key_only=err.get("type") == "extra_forbidden")
        problems.append(ConfigProblem(filename, line, col, _path(loc), msg))
    return problems


def _tidy(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    # union types report one error per branch; keep the clearest per location
    problems = _dedupe(problems)
    # a container reported as too short because a member failed is noise
    problems = [
        p for p in problems
        if not (p.message == "must not be empty"
                and any(q.path.startswith(p.path + "[") for q in problems))
    ]
    problems.sort(key=lambda p: (p.line, p.column))
    return problems


def _dedupe(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    by_path: dict[str, list[ConfigProblem]] = {}
    for p in problems:
        by_path.setdefault(p.path, []).append(p)
    out: list[ConfigProblem] = []
    for items in by_path.values():
        if len(items) > 1 and all("Input should be" in p.message or "valid" in p.message for p in items):
            first = items[0]
            msgs = "; ".join(dict.fromkeys(p.message for p in items))
            out.append(ConfigProblem(first.file, first.line, first.column, first.path, msgs))
        else:
            out.extend(items)
    return out


_WARNINGS: dict[int, list[ConfigProblem]] = {}


def warnings_for(cfg: ClusterConfig) -> list[ConfigProblem]:
    """Warnings found while loading `cfg` (e.g. an even etcd member count)."""
    return _WARNINGS.get(id(cfg), [])


def load(path: str | Path, *, resolve: Resolver | None = None) -> ClusterConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigProblem(str(p), 1, 1, "", "file not found")],
            hint="create one with `homekube init > cluster.yaml`, or pass --config PATH",
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([ConfigProblem(str(p), 1, 1, "", f"cannot read: {e}")]) from None
    return load_text(text, str(p), resolve=resolve)


Finding = tuple[Loc, str, bool]


def semantic_checks(cfg: ClusterConfig) -> list[Finding]:
    """Cross-field checks; each result is (location, message, is_warning)."""
    return [*_host_identity(cfg), *_roles(cfg), *_networks(cfg), *_address_families(cfg),
            *_endpoint_and_etcd(cfg)]


def _host_identity(cfg: ClusterConfig) -> list[Finding]:
    """Names and addresses are unique and usable as node addresses."""
    out: list[Finding] = []
    names: dict[str, int] = {}
    addrs: dict[str, int] = {}
    for i, h in enumerate(cfg.hosts):
        if h.name in names:
            out.append((("hosts", i, "name"), f"duplicate host name {h.name!r} (also hosts[{names[h.name]}])", False))
        names.setdefault(h.name, i)
        for field, a in _addresses(h):
            key = str(a)
            if key in addrs:
                out.append(((("hosts", i, field)), f"duplicate address {key} (also hosts[{addrs[key]}])", False))
            addrs.setdefault(key, i)
            if a.is_loopback or a.is_unspecified or a.is_multicast:
                out.append((("hosts", i, field), f"{a} cannot be a node address", False))
        if h.address6 is not None and h.ipv4 is None:
            msg = "address6 is for an extra IPv6 address; address is IPv6 already"
            out.append((("hosts", i, "address6"), msg, False))
    return out


def _addresses(h: HostSpec) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    return [(field, a) for field, a in (("address", h.address), ("address6", h.address6)) if a is not None]


def _roles(cfg: ClusterConfig) -> list[Finding]:
    out: list[Finding] = []
    if not cfg.control_planes and cfg.kubernetes.enabled:
        out.append((("hosts",), "at least one host needs the control-plane role", False))
    if not cfg.etcd_hosts:
        out.append((("hosts",), "at least one host needs the etcd role", False))
    n_etcd = len(cfg.etcd_hosts)
    if n_etcd and n_etcd % 2 == 0:
        ha = cfg.kubernetes.enabled and cfg.kubernetes.endpoint is not None
        msg = f"{n_etcd} etcd members tolerate no more failures than {n_etcd - 1}; use an odd count"
        if ha:
            msg += " (refused with kubernetes.endpoint: a highly available control plane needs an odd etcd)"
        out.append((("hosts",), msg, not ha))
    return out


def _networks(cfg: ClusterConfig) -> list[Finding]:
    """Pod and service ranges do not overlap each other or contain a host's address."""
    out: list[Finding] = []
    nets: list[tuple[Loc, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    nets += [(("network", "pods", i), n) for i, n in enumerate(cfg.network.pods)]
    nets += [(("network", "services", i), n) for i, n in enumerate(cfg.network.services)]
    for a_i in range(len(nets)):
        for b_i in range(a_i + 1, len(nets)):
            (la, na), (lb, nb) = nets[a_i], nets[b_i]
            if na.version == nb.version and na.overlaps(nb):
                out.append((lb, f"{nb} overlaps {na} ({_path(la)})", False))
    for i, h in enumerate(cfg.hosts):
        for field, addr in _addresses(h):
            for loc, net in nets:
                if addr.version == net.version and addr in net:
                    out.append(((("hosts", i, field)), f"{addr} lies inside {_path(loc)} {net}", False))
    return out


def _address_families(cfg: ClusterConfig) -> list[Finding]:
    """Every host has an address of each family the pod network uses."""
    out: list[Finding] = []
    families = {n.version for n in cfg.network.pods}
    for i, h in enumerate(cfg.hosts):
        if 6 in families and h.ipv6 is None:
            out.append((("hosts", i), "the pod network has IPv6: this host needs address6", False))
        if 4 in families and h.ipv4 is None:
            out.append((("hosts", i, "address"), "the pod network has IPv4: this host needs an IPv4 address", False))
    return out


def _endpoint_and_etcd(cfg: ClusterConfig) -> list[Finding]:
    out: list[Finding] = []
    ep = cfg.kubernetes.control_plane_endpoint
    if ep is not None:
        host, sep, port = ep.rpartition(":")
        if not sep or not port.isdigit() or not (0 < int(port) < 65536) or not host:
            out.append((("kubernetes", "controlPlaneEndpoint"), f"{ep!r} must be host:port", False))
    vip = cfg.kubernetes.endpoint
    if vip is not None and cfg.kubernetes.enabled:
        loc: Loc = ("kubernetes", "endpoint", "address")
        for i, h in enumerate(cfg.hosts):
            if vip.address in (h.address, h.address6):
                out.append((loc, f"{vip.address} is the address of hosts[{i}] ({h.name}); the "
                                 "virtual address must be one no host uses", False))
        cps = cfg.control_planes
        if cps and all(h.ipv4 is None for h in cps):
            out.append((loc, "the control planes have no IPv4 address for an IPv4 virtual "
                             "address to sit beside", False))
        for net in (*cfg.network.pods, *cfg.network.services):
            if net.version == 4 and vip.address in net:
                out.append((loc, f"{vip.address} lies inside {net} (pods or services)", False))
    if cfg.etcd.install == "package" and cfg.kubernetes.enabled:
        out.append(
            (("etcd", "install"), "distro etcd packages are 3.4.x, older than kubeadm's minimum 3.5.24", True)
        )
    return out
