"""Config files as plain data: YAML with `base:` chains, --set overrides, data.root anchoring,
and the typed reading of a section's values (one AttncnnError line per mistake).

`attncnn.engine.config` turns what these give into the typed `Config`.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from attncnn.errors import AttncnnError, closest


# -- files -----------------------------------------------------------------------------------

def load_yaml_with_base(path: Path, seen: list[Path], unresolved: dict) -> dict:
    """The YAML mapping in `path`, its `base:` chain merged under it (a loop is an error);
    each file's relative data.root anchored (`anchor_data_root`)."""
    path = path.resolve() if path.exists() else path
    if path in seen:
        chain = " -> ".join(str(p) for p in [*seen, path])
        raise AttncnnError(f"config base loop: {chain}")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AttncnnError(f"config file not found: {path}") from None
    except OSError as err:
        raise AttncnnError(f"cannot read config {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise AttncnnError(f"{path}: not a text (UTF-8) file ({err.reason} at byte "
                           f"{err.start})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # one line
        raise AttncnnError(f"{path}{where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise AttncnnError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise AttncnnError(f"{path}: 'base' must be a relative path, got {base!r}")
    parent = load_yaml_with_base(path.parent / base, [*seen, path], unresolved) \
        if base is not None else None
    anchor_data_root(raw, path, unresolved)  # after the base's: this file's root wins
    return raw if parent is None else merge(parent, raw)


def data_root(raw: dict):
    data = raw.get("data")
    return data.get("root") if isinstance(data, dict) else None


def anchor_data_root(raw: dict, config_file: Path | None, unresolved: dict) -> None:
    """Make the relative data.root of one file (or of the overrides: config_file None)
    absolute: from the current directory if it exists there, else from the file's
    folder. Found nowhere: left as it is, and the places looked at are kept in
    `unresolved["root"]` for the error."""
    data = raw.get("data")
    if not isinstance(data, dict) or "root" not in data:
        return
    unresolved.pop("root", None)  # this root replaces any set before
    root = data["root"]
    if not isinstance(root, str) or not root or Path(root).expanduser().is_absolute():
        return
    places = [(Path.cwd() / root, "from the current directory")]
    if config_file is not None:
        beside = config_file.absolute().parent / root
        if beside != places[0][0]:
            places.append((beside, f"beside {config_file}"))
    for place, _ in places:
        if place.exists():
            data["root"] = os.path.normpath(place)  # normpath, not resolve: keep link names
            return
    unresolved["root"] = (root, [(os.path.normpath(p), why) for p, why in places])


def merge(base: dict, child: dict) -> dict:
    """Child wins; sections (dicts of dicts) merge key by key, leaf dicts such as
    model.args and run.tags merge too, so a child can add one tag."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(raw: dict, item: str, sections: dict) -> None:
    """Set "section.key=value" (the value read as YAML) in `raw`; `sections` (name -> section
    dataclass) word the hint for a key given without its section."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise AttncnnError(f"override {item!r} must look like section.key=value, e.g. optim.lr=0.05")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise AttncnnError(f"override {item!r}: value is not valid YAML") from None
    parts = key.split(".")
    if len(parts) < 2:
        close = _suggest_dotted(key, sections)
        raise AttncnnError(f"override {item!r} needs section.key{close}")
    node = raw
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise AttncnnError(f"override {item!r}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def _suggest_dotted(key: str, sections: dict) -> str:
    for section, cls in sections.items():
        if key in {f.name for f in dataclasses.fields(cls)}:
            return f"; did you mean '{section}.{key}'?"
    return ""


# -- values -----------------------------------------------------------------------------------

def check_keys(values: dict, known, source: str, prefix: str) -> None:
    for key in values:
        if key not in known:
            close = closest(key, known)
            hint = f"; did you mean '{prefix}{close}'?" if close else \
                f" (known: {', '.join(known)})"
            raise AttncnnError(f"{source}: unknown key '{prefix}{key}'{hint}")


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]" if args else origin.__name__
    return {"str": "a string", "int": "an integer", "float": "a number",
            "bool": "true/false", "dict": "a mapping"}.get(tp.__name__, tp.__name__)


def check_type(value: Any, tp, source: str, key: str) -> Any:
    """`value` converted to `tp` where lossless (int -> float, list -> tuple), else an error."""
    ok, converted = _convert(value, tp)
    if not ok:
        raise AttncnnError(f"{source}: {key} must be {_type_name(tp)}, got {value!r}")
    return converted


def _convert(value, tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, None
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, None
        args = typing.get_args(tp)
        item_type = args[0] if args else Any
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                return False, None
            pairs = list(zip(value, args))
        else:
            pairs = [(v, item_type) for v in value]
        items = [_convert(v, t) for v, t in pairs]
        if not all(ok for ok, _ in items):
            return False, None
        return True, origin(c for _, c in items)
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def plain(value):
    """Tuples -> lists, recursively, so the dict round-trips through YAML safe_dump."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
