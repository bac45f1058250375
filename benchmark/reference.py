"""Read checkpoints without running code from them, and load state dicts strictly.

A checkpoint that the authors' reference code saved (MS-SL, DL-DKD, DL-DKD++) is a torch zip
pickle ``{"model": state_dict, "model_cfg": EasyDict, "epoch": int}``. ``torch.load(...,
weights_only=True)`` refuses it because of the ``easydict.EasyDict``, and ``weights_only=False``
would let the file call anything it names. :func:`read_checkpoint` reads it with a restricted
unpickler instead:

* **The gate.** Pickle can only call what ``Unpickler.find_class`` hands it: every GLOBAL,
  STACK_GLOBAL, INST, OBJ and extension-registry opcode goes through it, and REDUCE, NEWOBJ and
  BUILD act only on objects that came out of it. Our ``find_class`` answers from an explicit
  allow-list (``ALLOWED_GLOBALS``) and raises :class:`UnsafeCheckpointError` naming
  ``module.name`` for anything else, before anything is called. The allow-list holds torch's
  tensor rebuild functions (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``) and
  storage classes, ``collections.OrderedDict`` (a state dict), the builtin containers and
  numbers that protocol 2 spells as globals (``set``, ``frozenset``, ``complex``, ``bytes``,
  ``bytearray``), ``_codecs.encode`` restricted to latin-1 (how protocol 2 spells ``bytes``),
  and ``easydict.EasyDict``.
* **EasyDict without easydict.** ``easydict.EasyDict`` resolves to a local stand-in, a ``dict``
  subclass whose ``__setstate__`` drops the pickled attribute mirror (EasyDict stores every item
  twice, as a key and as an attribute). The loaded tree is then turned into plain dicts, so the
  ``easydict`` package is neither imported nor needed.
* **torch does the rest.** The unpickler is handed to ``torch.load`` as its ``pickle_module``
  (with ``weights_only=False``, which torch requires for a custom module): torch keeps reading
  the zip records, building storages in its own ``persistent_load`` (which yields storages
  only) and mapping them to ``map_location``. Before that, the file must be a torch zip archive
  (the format of ``torch.save`` since torch 1.6) and not a TorchScript archive, which
  ``torch.load`` would hand to ``torch.jit.load``; legacy (pre-zip) pickles are refused too.

Why not ``weights_only=True`` with ``torch.serialization.safe_globals``: it would need the real
``easydict`` class (or an alias keyed by its import path), and its refusals come back as
several paragraphs of text; the explicit gate gives a one-line error naming the refused global
and keeps the whole allow-list on one screen. The project's own checkpoints (``best.pt``) hold
only tensors, strings and numbers and are still loaded with ``weights_only=True``
(``benchmark/training/checkpoint.py``).

A damaged file (truncated, not a zip, an unreadable record) stops with one line naming it.
"""
from __future__ import annotations

import collections
import os
import pickle
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch._utils
from torch import Tensor

from benchmark.registry import ReferenceImportError, key_differences, key_listing
from benchmark.training.checkpoint import CheckpointError

_ZIP_MAGIC = b"PK\x03\x04"
_LATIN1_NAMES = frozenset({"latin1", "latin", "iso88591", "l1"})   # no codec lookup: nothing imported


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint names a global outside the allow-list; nothing from it was called."""


class StateMismatchError(CheckpointError):
    """A state dict does not fit the model built for the data (keys or shapes)."""


class _EasyDict(dict):
    """Stand-in for ``easydict.EasyDict``: its items only."""

    def __setstate__(self, state: object) -> None:
        """EasyDict pickles its items and, again, the same values as attributes: drop those."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for ``bytes``, and for nothing else."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise UnsafeCheckpointError("_codecs.encode with arguments other than (str, 'latin1')")
    if encoding.lower().replace("-", "").replace("_", "") not in _LATIN1_NAMES:
        raise UnsafeCheckpointError(f"_codecs.encode with encoding {encoding!r} (only latin-1 is "
                                    "read: the form protocol 2 gives to bytes)")
    return text.encode("latin-1")


def _storage_classes() -> dict[tuple[str, str], Any]:
    """``torch.<Dtype>Storage`` and ``torch.UntypedStorage`` (torch maps the typed names itself;
    these answer when it does not)."""
    out: dict[tuple[str, str], Any] = {("torch", "UntypedStorage"): torch.UntypedStorage}
    for name in dir(torch):
        value = getattr(torch, name)
        if (name.endswith("Storage") and isinstance(value, type)
                and issubclass(value, torch.storage._LegacyStorage)):
            out[("torch", name)] = value
    return out


#: (module, name) -> the object a checkpoint may refer to. Nothing else is resolved.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    **_storage_classes(),
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _latin1_bytes,
    ("easydict", "EasyDict"): _EasyDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(f"refused global {module}.{name}: not a tensor, "
                                        "container, number, string or EasyDict") from None


#: What ``torch.load`` receives as ``pickle_module``: it subclasses ``Unpickler`` (adding its
#: storage mapping and ``persistent_load``) and never calls ``load`` for a zip archive.
_RESTRICTED_PICKLE = types.ModuleType("benchmark.reference.restricted_pickle")
setattr(_RESTRICTED_PICKLE, "Unpickler", _RestrictedUnpickler)
setattr(_RESTRICTED_PICKLE, "UnpicklingError", pickle.UnpicklingError)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _plain(obj: Any) -> Any:
    """The loaded tree with every EasyDict stand-in turned into a plain dict."""
    if isinstance(obj, _EasyDict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, dict) and not isinstance(obj, collections.OrderedDict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def _check_archive(path: Path) -> None:
    """A torch zip archive with one pickle, not TorchScript; else one line naming the file."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not found")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not zipfile.is_zipfile(path):
        if head == _ZIP_MAGIC:
            raise CheckpointError(f"checkpoint {path}: truncated or damaged (a zip archive "
                                  "without its central directory)")
        raise CheckpointError(f"checkpoint {path}: not a torch zip checkpoint (torch.save's "
                              "format since torch 1.6); other formats are not read")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable zip archive: "
                              f"{_one_line(str(exc))}") from None
    if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
        raise CheckpointError(f"checkpoint {path}: a TorchScript archive, not a checkpoint; "
                              "TorchScript runs code on load and is not read")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        raise CheckpointError(f"checkpoint {path}: zip archive without a data.pkl record; not "
                              "a torch checkpoint")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The top-level dict of a torch zip checkpoint, read through the allow-list.

    EasyDicts come back as plain dicts. Raises ``UnsafeCheckpointError`` naming a refused
    global, ``CheckpointError`` naming the file when it is missing, damaged or not a dict.
    """
    path = Path(path)
    _check_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, pickle_module=_RESTRICTED_PICKLE,
                             weights_only=False)   # the gate is _RestrictedUnpickler.find_class
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"checkpoint {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - torch and pickle raise many types for a bad file
        raise CheckpointError(f"checkpoint {path}: cannot read: {type(exc).__name__}: "
                              f"{_one_line(str(exc))}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path}: holds a {type(payload).__name__}, expected a "
                              "dict")
    return _plain(payload)


# ----------------------------------------------------------------------------------------------
# Reference checkpoints
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReferenceCheckpoint:
    """What a reference ``model.ckpt`` holds: the state dict under the reference's own names,
    its model config (EasyDict read as a plain dict) and the epoch it was saved at."""

    state_dict: dict[str, Tensor]
    model_cfg: dict[str, Any]
    epoch: int | None


def is_reference_payload(payload: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's top-level dict has the reference layout (``model``, ``model_cfg``)."""
    return "model" in payload and "model_cfg" in payload


def reference_from_payload(payload: Mapping[str, Any], path: str | os.PathLike) -> ReferenceCheckpoint:
    """Check the reference layout of a read checkpoint; errors name the file and the key."""
    if not is_reference_payload(payload):
        raise ReferenceImportError(f"checkpoint {path}: not a reference checkpoint (top-level "
                                   f"keys {sorted(map(str, payload))}; expected 'model', "
                                   "'model_cfg' and 'epoch')")
    model, model_cfg, epoch = payload["model"], payload["model_cfg"], payload.get("epoch")
    if not isinstance(model, Mapping):
        raise ReferenceImportError(f"checkpoint {path}: 'model' is a {type(model).__name__}, "
                                   "expected a state dict")
    bad = [str(k) for k, v in model.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ReferenceImportError(f"checkpoint {path}: 'model' entries that are not named "
                                   f"tensors: {bad[:5]}{' ...' if len(bad) > 5 else ''}")
    if not isinstance(model_cfg, Mapping):
        raise ReferenceImportError(f"checkpoint {path}: 'model_cfg' is a "
                                   f"{type(model_cfg).__name__}, expected a dict")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise ReferenceImportError(f"checkpoint {path}: 'epoch' is {epoch!r}, expected an integer")
    return ReferenceCheckpoint(state_dict=dict(model), model_cfg=dict(model_cfg), epoch=epoch)


def load_reference_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> ReferenceCheckpoint:
    """Read a reference ``model.ckpt`` without running code from it (module docstring)."""
    return reference_from_payload(read_checkpoint(path, map_location), path)


# ----------------------------------------------------------------------------------------------
# Strict state loading
# ----------------------------------------------------------------------------------------------

def load_state_strict(module: torch.nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``, with every mismatch named on one line.

    Missing keys, unexpected keys and shape mismatches (a checkpoint for other feature sizes or
    hidden sizes than the model built for the data) raise ``StateMismatchError`` naming them,
    ``source`` first (the checkpoint path and what it was read as).
    """
    own = module.state_dict()
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = key_differences(state_dict, own, limit=6)
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs model) {key_listing(shapes, 4)}")
    if problems:
        raise StateMismatchError(f"{source} does not fit the model: {'; '.join(problems)}")
    module.load_state_dict(dict(state_dict), strict=True)
