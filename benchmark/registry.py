"""Registries of methods and variants (docs/architecture.md §3).

A base method is a class plus its default config; a variant ``<base>.<name>`` is a named,
validated config delta of its base (dotted paths relative to the method config).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, TypeVar

from benchmark.errors import PRVRBenchError
from benchmark.interface import MethodConfig, PRVRMethod
from benchmark.overrides import ConfigError, apply_overrides

T = TypeVar("T")

ENTRY_POINT_GROUP = "prvr_bench.methods"


class UnknownNameError(PRVRBenchError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class RegistrationError(PRVRBenchError, ValueError):
    """A name registered twice, or one that breaks the naming rules; the message names it."""


class PluginsMissingError(PRVRBenchError, RuntimeError):
    """No installed package registers methods: the project is not installed."""


class Registry(Generic[T]):
    """Name -> entry. Raises on duplicates; unknown names get close suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise RegistrationError(f"duplicate {self.kind} name {name!r}")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            names = sorted(self._items)
            if not names:
                known = "(none registered: is the project installed?)"
            elif len(names) > 12 and any("." in n for n in names):   # long with variants: bases
                bases = sorted({n.split(".", 1)[0] for n in names})
                known = (f"{', '.join(bases)} and {len(names) - len(bases)} variants "
                         "(python -m benchmark.train --list-methods)")
            else:
                known = ", ".join(names)
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} Known: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)


@dataclass(frozen=True)
class MethodEntry:
    """A registered method or variant, resolved to (class, full config delta)."""

    name: str                      # "dl-dkd++" or "dl-dkd++.hard-targets"
    base: str                      # "dl-dkd++"
    cls: type[PRVRMethod]
    default_config: MethodConfig   # base defaults with the variant delta applied
    summary: str
    delta: Mapping[str, Any] = field(default_factory=dict)
    reconstruction: bool = False   # rebuilt without public code: every run is tagged so

    @property
    def is_variant(self) -> bool:
        return self.name != self.base


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(name: str, cls: type[PRVRMethod], config: MethodConfig, summary: str,
                    *, reconstruction: bool = False) -> MethodEntry:
    """Register a base method. ``reconstruction`` marks a method rebuilt without public code
    (kdc-net): every run of it and its variants is tagged as such."""
    if "." in name or name != name.lower() or " " in name:
        raise RegistrationError(f"base method names are lower-case kebab-case without dots: {name!r}")
    if not isinstance(config, cls.config_cls):
        raise TypeError(f"{name}: config must be a {cls.config_cls.__name__}")
    return METHODS.add(name, MethodEntry(name, name, cls, config, summary, {}, reconstruction))


def register_variant(name: str, summary: str, delta: Mapping[str, Any]) -> MethodEntry:
    """Register ``<base>.<variant>`` as a named config delta of a registered base method.
    The delta is validated now (unknown keys and wrong types raise at import)."""
    base_name, sep, rest = name.partition(".")
    if not sep or not rest:
        raise RegistrationError(f"variant names look like '<base>.<variant>': {name!r}")
    base = METHODS.get(base_name)
    try:
        config = apply_overrides(base.default_config, dict(delta))
    except ConfigError as exc:
        raise ConfigError(f"variant {name!r}: {exc}") from None
    return METHODS.add(name, MethodEntry(name, base_name, base.cls, config, summary,
                                         dict(delta), base.reconstruction))


_loaded = False


def load_plugins() -> None:
    """Import every module of the ``prvr_bench.methods`` entry-point group once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    if not eps:
        raise PluginsMissingError(f"no '{ENTRY_POINT_GROUP}' entry points found: install the project "
                                  "(pip install -e .) so its methods register")
    for ep in eps:
        ep.load()


def get_method(name: str) -> MethodEntry:
    load_plugins()
    return METHODS.get(name)


def list_methods() -> list[MethodEntry]:
    load_plugins()
    return [METHODS.get(n) for n in METHODS.names()]


# -- reference checkpoint importers ----------------------------------------------------------

@dataclass(frozen=True)
class ReferenceImporter:
    """How a base method reads a checkpoint that the authors' public reference code saved.

    ``recognizes(state_dict)`` says whether the reference state dict is this method's (by its
    key names). ``convert(state_dict, model_cfg)`` returns ``(overrides, state_dict)``: config
    overrides as dotted config paths, the vocabulary of ``--set`` (``{"method.hidden_size": 96,
    "data.max_frames": 128}``), read from the reference's ``model_cfg`` and the tensor shapes,
    and the state dict renamed onto the project's module names. It raises
    ``ReferenceImportError`` naming any key it cannot place. Each method package registers its
    own importer: the core holds no table of reference names.
    """

    base: str
    recognizes: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


class ReferenceImportError(PRVRBenchError, ValueError):
    """A reference checkpoint cannot be mapped onto a method; the message names the keys."""


REFERENCE_IMPORTERS: Registry[ReferenceImporter] = Registry("reference importer")


def register_reference_importer(importer: ReferenceImporter) -> ReferenceImporter:
    """Register the reference importer of a registered base method."""
    METHODS.get(importer.base)
    return REFERENCE_IMPORTERS.add(importer.base, importer)


def get_reference_importer(base: str) -> ReferenceImporter:
    load_plugins()
    return REFERENCE_IMPORTERS.get(base)


def recognising_importers(state_dict: Mapping[str, Any]) -> list[ReferenceImporter]:
    """Every registered importer that recognises ``state_dict``, in registration order."""
    load_plugins()
    return [importer for importer in (REFERENCE_IMPORTERS.get(n) for n in REFERENCE_IMPORTERS.names())
            if importer.recognizes(state_dict)]


def find_reference_importer(state_dict: Mapping[str, Any]) -> ReferenceImporter:
    """The one importer that recognises ``state_dict``; an error when none or several do."""
    found = recognising_importers(state_dict)
    if len(found) != 1:
        which = ", ".join(i.base for i in found) or "none"
        raise ReferenceImportError(
            f"cannot tell which method this reference checkpoint belongs to (recognised by: "
            f"{which}); pass --reference {'|'.join(REFERENCE_IMPORTERS.names()) or 'NAME'}")
    return found[0]


def key_listing(keys: Iterable[str], limit: int = 8) -> str:
    """The first ``limit`` of ``keys`` (sorted), then how many more."""
    names = sorted(keys)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def key_differences(found: Iterable[str], expected: Iterable[str], limit: int = 8) -> list[str]:
    """``missing N key(s): …`` and ``unexpected N key(s): …`` between two key sets (empty when
    they are equal): the one wording of a state-dict key mismatch."""
    found, expected = set(found), set(expected)
    missing, unexpected = expected - found, found - expected
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): {key_listing(missing, limit)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s): {key_listing(unexpected, limit)}")
    return parts


def check_reference_keys(base: str, found: Iterable[str], expected: Iterable[str]) -> None:
    """Every reference key placed, every expected key present; else one error naming both."""
    parts = key_differences(found, expected)
    if parts:
        raise ReferenceImportError(f"{base} reference checkpoint does not fit {base}: "
                                   + "; ".join(parts))
