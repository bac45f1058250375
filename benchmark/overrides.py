"""Dotted-path overrides on nested frozen dataclasses: the one way any config value changes.

Every layer (collection presets, method presets, variant deltas, user files, ``--set``, sweep
trials) goes through :func:`apply_overrides`, which walks the dotted path, converts the value
by the field's annotation, rejects unknown keys with close suggestions and wrong types with the
expected type, and rebuilds the dataclasses so ``__post_init__`` validation runs again.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, Literal, Mapping, get_args, get_origin

from benchmark.errors import PRVRBenchError


class ConfigError(PRVRBenchError, ValueError):
    """A config key or value is invalid; the message names the key and the problem."""


#: Field names retired for one vocabulary across method configs: old name -> new name. A key
#: with an old name is an error pointing at the new one wherever the new one is a field.
RENAMED_KEYS: dict[str, str] = {
    "hidden": "hidden_size",
    "heads": "num_heads",
    "hard_pool": "hard_pool_size",
    "v2t_hard": "triplet_v2t_hard",
}

#: Fields removed because nothing read them: dotted path from the ExperimentConfig root -> why.
#: A saved config.json that still holds one is refused, naming the key; delete it to rerun.
REMOVED_KEYS: dict[str, str] = {
    "train.num_workers": "the loaders always ran in-process and nothing read it",
}


def _unknown_key(name: str, key: str, names: list[str]) -> ConfigError:
    """The error for a key that is not a field: renamed, removed, or a typo with suggestions."""
    new = RENAMED_KEYS.get(name)
    if new in names:
        new_key = key[: len(key) - len(name)] + new
        return ConfigError(f"config key {key!r}: {name!r} was renamed to {new!r}; use {new_key!r}")
    if key in REMOVED_KEYS:
        return ConfigError(f"config key {key!r} was removed ({REMOVED_KEYS[key]}); delete it")
    return ConfigError(f"unknown config key {key!r}{_suggest(name, names)}")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_names(obj) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(options)}"


def _parse_string(text: str, annotation) -> Any:
    """Turn a command-line string into a Python value guided by the annotation."""
    text = text.strip()
    origin = get_origin(annotation)
    if annotation is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if annotation is int:
        return int(text)
    if annotation is float:
        return float(text)
    if annotation is str:
        return text
    if origin is Literal:
        return text
    if origin in (tuple, list):
        if text.startswith("["):
            return json.loads(text)
        if text.startswith("("):
            text = text[1:-1]
        return [p for p in (s.strip() for s in text.split(",")) if p != ""]
    if _is_optional(annotation):
        if text.lower() in ("none", "null", ""):
            return None
        return _parse_string(text, _strip_optional(annotation))
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _is_optional(annotation) -> bool:
    origin = get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in get_args(annotation)


def _strip_optional(annotation):
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else typing.Union[tuple(args)]


def coerce(value: Any, annotation, key: str) -> Any:
    """Check/convert ``value`` for a field annotated ``annotation``; raise ConfigError naming key."""
    try:
        return _coerce(value, annotation)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {key!r}: {exc}") from None


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation) -> Any:
    if isinstance(value, str) and annotation is not str and get_origin(annotation) is not Literal:
        value = _parse_string(value, annotation)
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if _is_optional(annotation):
        if value is None:
            return None
        return _coerce(value, _strip_optional(annotation))
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(annotation):
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"expected {_type_name(annotation)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(annotation)
        if isinstance(value, str) and value not in allowed:
            # allow bools/numbers spelled as strings inside a Literal
            for a in allowed:
                if str(a).lower() == value.lower():
                    return a
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected a bool, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"expected an int, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a float, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        args = get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a sequence, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError(f"expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return apply_overrides(annotation(), dict(value))
        raise TypeError(f"expected a {annotation.__name__} table, got {value!r}")
    if isinstance(annotation, type):
        if not isinstance(value, annotation):
            raise TypeError(f"expected {annotation.__name__}, got {value!r}")
    return value


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "a": {"c": 2}} -> {"a": {"b": 1, "c": 2}} (dotted keys and tables mix)."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key!r} conflicts with a value set for {part!r}")
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf].update(_nest(value))
        elif isinstance(value, Mapping):
            node[leaf] = _nest(value)
        else:
            node[leaf] = value
    return tree


def apply_overrides(obj, overrides: Mapping[str, Any], *, prefix: str = ""):
    """Return a copy of dataclass ``obj`` with dotted-path ``overrides`` applied.

    Values may be Python values or strings (from ``--set``); nested tables are accepted.
    Raises ConfigError for unknown keys (with suggestions) and for wrong types.
    """
    if not overrides:
        return obj
    tree = _nest(overrides)
    hints = _hints(type(obj))
    names = _field_names(obj)
    changes: dict[str, Any] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise _unknown_key(name, key, names)
        annotation = hints[name]
        current = getattr(obj, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            changes[name] = apply_overrides(current, value, prefix=f"{key}.")
        elif isinstance(value, dict) and not dataclasses.is_dataclass(annotation):
            raise ConfigError(f"config key {key!r} is a value, not a table")
        else:
            changes[name] = coerce(value, annotation, key)
    try:
        return dataclasses.replace(obj, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config under {prefix or 'root'!r}: {exc}") from None


def flatten(obj, prefix: str = "") -> dict[str, Any]:
    """Nested dataclass -> {"dotted.key": leaf value}; tuples become lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{key}."))
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def to_jsonable(obj) -> Any:
    """Nested dataclass -> plain JSON-compatible dicts (round-trips through apply_overrides)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_jsonable(v) for v in obj]
    return obj
