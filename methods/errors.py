"""Errors of the built-in methods that report bad configs or inputs.

Both derive from the project's base :class:`~benchmark.errors.PRVRBenchError` (the command-line
tools report it in one line) and from ``ValueError``, which callers and the config layer
(``benchmark.overrides``, which names the key) catch.
"""
from __future__ import annotations

from benchmark.errors import PRVRBenchError


class MethodConfigError(PRVRBenchError, ValueError):
    """A method config value is out of range; the message names the field."""


class MethodInputError(PRVRBenchError, ValueError):
    """A batch lacks an input the method needs; the message names it and how to load it."""
