"""What the command-line tools share: the usage exit code, a parser whose errors are one line,
``--set KEY=VALUE`` parsing, and the flags that are shortcuts for config paths."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from benchmark.overrides import ConfigError

#: Exit status of every bad input: config, data, stores, usage.
EXIT_USAGE = 2

#: Flag destination -> the config path it is a shortcut for (applied before ``--set``).
FLAG_PATHS = {
    "visual_feature": "data.visual_feature",
    "moments": "data.moments",
    "relevance": "data.relevance",
    "epochs": "train.epochs",
    "seed": "seed",
    "device": "device",
    "tracking_uri": "tracking.tracking_uri",
    "runs_dir": "tracking.runs_dir",
}


class UsageParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line and exit with ``EXIT_USAGE``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> ``{key: value}``; a malformed item is a ConfigError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config paths set by the shortcut flags this parser has and the user gave."""
    return {path: getattr(args, dest) for dest, path in FLAG_PATHS.items()
            if getattr(args, dest, None) not in (None, "")}


def fail(message: str) -> int:
    """One line on stderr; the usage exit status."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
