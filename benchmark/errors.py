"""The project's error base class.

Every error that reports bad input, configuration, data, stores or usage derives from
``PRVRBenchError``; its message is one line naming the file, key or name and the problem.
The command-line tools catch this base (exit code 2, one line on stderr) and nothing
broader, so a ``ValueError`` or ``KeyError`` raised by a bug keeps its traceback.
Subclasses also derive from the built-in exception they refine (``ValueError``, ``KeyError``)
so callers catching those keep working.
"""
from __future__ import annotations


class PRVRBenchError(Exception):
    """Base of every error the project raises on purpose."""
