"""Import a checkpoint of the public MS-SL reference code (``HuiGuanLab/ms-sl``) into ``ms-sl``.

The reference saves ``{"model": state_dict, "model_cfg": EasyDict, "epoch": int}``; reading the
file is the core's job (``benchmark.reference``). This module only knows the reference's names:
``convert`` renames its state dict onto :class:`methods.ms_sl.MSSL` and reads the method
config from ``model_cfg`` (card: methods/cards/ms-sl.md, "Reference checkpoints").

Every mapping is a rename: each reference tensor lands unchanged (same shape, same layout) on
exactly one of our parameters, and the table below covers every parameter of ``MSSL``
(tests/test_reference_ms_sl.py checks both directions). The reference modules and ours:

* ``{q,c,f}_input_proj`` = ``LinearLayer``: ``LayerNorm`` then ``net = Sequential(Dropout,
  Linear, ReLU)``, so ``net.1`` is the linear map -> ``<branch>_encoder.projection``;
* ``{q,c,f}_pos_embed`` = ``TrainablePositionalEncoding`` -> ``<branch>_encoder.position``;
* ``{q,c,f}_encoder`` = ``BertAttention``: ``self.{query,key,value}``, ``output.dense``,
  ``output.LayerNorm`` -> ``<branch>_encoder.encoder`` (``SelfAttentionLayer``, whose output map
  and LayerNorm sit directly on the layer);
* ``modular_vector_mapping`` (the query's attention-pooling vector) -> ``query_encoder.pool.score``;
* ``mapping_linear.0`` / ``.1`` (KCGA keys / values, no bias) -> ``key_map`` / ``value_map``.

Input sizes (d_q, d_v) are not overrides: they come from the data, and a checkpoint whose
input projections do not fit the data's feature sizes fails ``load_state_dict``. The position
tables' lengths are the data settings ``max_query_tokens`` / ``max_frames``
(:func:`data_overrides` gives them, with ``num_clips``, from ``model_cfg``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from benchmark.registry import (
    ReferenceImporter,
    ReferenceImportError,
    check_reference_keys,
    register_reference_importer,
)
from methods.ms_sl import MSSLConfig

#: reference module prefix -> our module prefix, per branch (query, clip, frame)
_BRANCHES = {"query": "query_encoder", "clip": "clip_encoder", "frame": "frame_encoder"}

#: reference name within a branch (after the branch word) -> ours within ``<branch>_encoder``
_BRANCH_PARAMS = {
    "input_proj.LayerNorm.weight": "projection.LayerNorm.weight",
    "input_proj.LayerNorm.bias": "projection.LayerNorm.bias",
    "input_proj.net.1.weight": "projection.linear.weight",
    "input_proj.net.1.bias": "projection.linear.bias",
    "pos_embed.position_embeddings.weight": "position.position_embeddings.weight",
    "pos_embed.LayerNorm.weight": "position.LayerNorm.weight",
    "pos_embed.LayerNorm.bias": "position.LayerNorm.bias",
    "encoder.self.query.weight": "encoder.query.weight",
    "encoder.self.query.bias": "encoder.query.bias",
    "encoder.self.key.weight": "encoder.key.weight",
    "encoder.self.key.bias": "encoder.key.bias",
    "encoder.self.value.weight": "encoder.value.weight",
    "encoder.self.value.bias": "encoder.value.bias",
    "encoder.output.dense.weight": "encoder.output.weight",
    "encoder.output.dense.bias": "encoder.output.bias",
    "encoder.output.LayerNorm.weight": "encoder.LayerNorm.weight",
    "encoder.output.LayerNorm.bias": "encoder.LayerNorm.bias",
}


def _key_table() -> dict[str, str]:
    table = {f"{ref}_{name}": f"{ours}.{target}"
             for ref, ours in _BRANCHES.items() for name, target in _BRANCH_PARAMS.items()}
    table["modular_vector_mapping.weight"] = "query_encoder.pool.score.weight"
    table["mapping_linear.0.weight"] = "key_map.weight"
    table["mapping_linear.1.weight"] = "value_map.weight"
    return table


#: every reference state-dict key -> our state-dict key (a bijection onto MSSL's parameters)
KEY_MAP: dict[str, str] = _key_table()

#: keys only an MS-SL reference state dict has (DL-DKD's are prefixed A_/B_, DL-DKD++ has no
#: clip branch and no ``mapping_linear.0``)
_CHARACTERISTIC = ("clip_input_proj.net.1.weight", "clip_pos_embed.position_embeddings.weight",
                   "mapping_linear.0.weight", "mapping_linear.1.weight")

#: model_cfg key -> MSSLConfig field, read when present (hidden_size is read from the tensors
#: and checked against model_cfg)
_CFG_FIELDS = {"n_heads": "num_heads",
               "input_drop": "input_dropout", "drop": "dropout", "margin": "margin",
               "hard_pool_size": "hard_pool_size",
               "clip_scale_w": "clip_weight", "frame_scale_w": "frame_weight"}


def recognizes(state_dict: Mapping[str, Any]) -> bool:
    """True when ``state_dict`` has the MS-SL reference's characteristic key names."""
    return all(key in state_dict for key in _CHARACTERISTIC)


def _shape(tensor: Any) -> tuple[int, ...]:
    shape = getattr(tensor, "shape", None)
    if shape is None:
        raise ReferenceImportError(f"ms-sl reference: value of type {type(tensor).__name__} "
                                   "is not a tensor")
    return tuple(int(s) for s in shape)


def _check_keys(state_dict: Mapping[str, Any]) -> None:
    check_reference_keys("ms-sl", state_dict, KEY_MAP)


def _expected_shape(name: str, hidden: int, d_in: int) -> tuple[int, ...] | None:
    """Shape of one branch parameter (name after the branch word); None for the position
    table, whose length is checked by ``_check_lengths``."""
    if name == "pos_embed.position_embeddings.weight":
        return None
    if name.startswith("input_proj.LayerNorm."):
        return (d_in,)
    if name == "input_proj.net.1.weight":
        return (hidden, d_in)
    if name.endswith(".weight") and not name.endswith("LayerNorm.weight"):
        return (hidden, hidden)                              # attention and output maps
    return (hidden,)                                         # their biases and LayerNorms


def _hidden_size(state_dict: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> int:
    """The hidden size from the tensors, checked against ``model_cfg`` and every tensor."""
    hidden = _shape(state_dict["mapping_linear.0.weight"])[0]
    expected: dict[str, tuple[int, ...] | None] = {
        "modular_vector_mapping.weight": (1, hidden),
        "mapping_linear.0.weight": (hidden, hidden),
        "mapping_linear.1.weight": (hidden, hidden)}
    for branch in _BRANCHES:
        d_in = _shape(state_dict[f"{branch}_input_proj.LayerNorm.weight"])[0]
        for name in _BRANCH_PARAMS:
            expected[f"{branch}_{name}"] = _expected_shape(name, hidden, d_in)
    bad = [f"{k} {_shape(state_dict[k])} (expected {v})" for k, v in expected.items()
           if v is not None and _shape(state_dict[k]) != v]
    for branch in _BRANCHES:
        table = _shape(state_dict[f"{branch}_pos_embed.position_embeddings.weight"])
        if len(table) != 2 or table[1] != hidden:
            bad.append(f"{branch}_pos_embed.position_embeddings.weight {table} "
                       f"(expected (L, {hidden}))")
    if bad:
        raise ReferenceImportError("ms-sl reference checkpoint has inconsistent shapes: "
                                   + "; ".join(bad))
    if model_cfg.get("hidden_size") is not None and int(model_cfg["hidden_size"]) != hidden:
        raise ReferenceImportError(f"ms-sl reference: model_cfg hidden_size "
                                   f"{model_cfg['hidden_size']} differs from the tensors' {hidden}")
    return hidden


def _check_input_sizes(state_dict: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> None:
    """``model_cfg``'s input sizes against the input projections (the data checks them again
    when the state dict is loaded into a model built from the data's sizes)."""
    pairs = {"query_input_size": "query_input_proj.net.1.weight",
             "visual_input_size": "frame_input_proj.net.1.weight"}
    for cfg_key, key in pairs.items():
        if model_cfg.get(cfg_key) is not None:
            size = _shape(state_dict[key])[1]
            if int(model_cfg[cfg_key]) != size:
                raise ReferenceImportError(f"ms-sl reference: model_cfg {cfg_key} "
                                           f"{model_cfg[cfg_key]} differs from {key}'s input "
                                           f"size {size}")
    clip_in = _shape(state_dict["clip_input_proj.net.1.weight"])[1]
    frame_in = _shape(state_dict["frame_input_proj.net.1.weight"])[1]
    if clip_in != frame_in:
        raise ReferenceImportError(f"ms-sl reference: clip input size {clip_in} differs from "
                                   f"frame input size {frame_in} (both read the visual feature)")


def _check_lengths(state_dict: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> None:
    """Position tables: query rows = max_desc_l; clip and frame rows = max_ctx_l (clips use the
    first map_size rows of theirs)."""
    rows = {b: _shape(state_dict[f"{b}_pos_embed.position_embeddings.weight"])[0] for b in _BRANCHES}
    if rows["clip"] != rows["frame"]:
        raise ReferenceImportError(f"ms-sl reference: clip position table has {rows['clip']} "
                                   f"rows, frame position table {rows['frame']}; MS-SL sizes "
                                   "both by max_ctx_l")
    for cfg_key, branch in (("max_desc_l", "query"), ("max_ctx_l", "frame")):
        if model_cfg.get(cfg_key) is not None and int(model_cfg[cfg_key]) != rows[branch]:
            raise ReferenceImportError(f"ms-sl reference: model_cfg {cfg_key} {model_cfg[cfg_key]} "
                                       f"differs from the {branch} position table's "
                                       f"{rows[branch]} rows")
    map_size = int(model_cfg.get("map_size", 32))
    if map_size > rows["clip"]:
        raise ReferenceImportError(f"ms-sl reference: map_size {map_size} exceeds the clip "
                                   f"position table's {rows['clip']} rows")


def method_overrides(state_dict: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """MSSLConfig overrides: the hidden size from the tensors (checked against ``model_cfg``),
    heads, dropouts, margin and hard-negative pool from ``model_cfg``, and the fusion weights
    when ``model_cfg`` holds them (the reference keeps them in its run options instead, so a
    plain checkpoint leaves the collection preset's weights)."""
    overrides: dict[str, Any] = {"hidden_size": _hidden_size(state_dict, model_cfg)}
    for cfg_key, field in _CFG_FIELDS.items():
        if model_cfg.get(cfg_key) is None:
            continue
        value = model_cfg[cfg_key]
        overrides[field] = int(value) if field in ("num_heads", "hard_pool_size") else float(value)
    heads = overrides.get("num_heads")
    if heads is not None and (heads < 1 or overrides["hidden_size"] % heads):
        raise ReferenceImportError(f"ms-sl reference: hidden size {overrides['hidden_size']} is "
                                   f"not a multiple of model_cfg n_heads {heads}")
    try:                                   # every value must be a valid MSSLConfig
        replace(MSSLConfig(), **overrides)
    except ValueError as err:
        raise ReferenceImportError(f"ms-sl reference: model_cfg gives an invalid config: {err}") from None
    return overrides


def data_overrides(model_cfg: Mapping[str, Any]) -> dict[str, int]:
    """The data settings the reference model was built for, as ``data.*`` config paths:
    ``max_ctx_l`` -> ``data.max_frames``, ``max_desc_l`` -> ``data.max_query_tokens``,
    ``map_size`` -> ``data.num_clips`` (each only when ``model_cfg`` holds it)."""
    pairs = {"max_ctx_l": "data.max_frames", "max_desc_l": "data.max_query_tokens",
             "map_size": "data.num_clips"}
    return {path: int(model_cfg[key]) for key, path in pairs.items()
            if model_cfg.get(key) is not None}


def convert(state_dict: Mapping[str, Any], model_cfg: Mapping[str, Any]
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config overrides as dotted paths: ``method.*`` and the ``data.*`` lengths the model was
    built for, our state dict); ``ReferenceImportError`` names every reference
    key that has no place in MS-SL and every MS-SL parameter the checkpoint does not fill."""
    _check_keys(state_dict)
    try:
        overrides = method_overrides(state_dict, model_cfg)
        _check_input_sizes(state_dict, model_cfg)
        _check_lengths(state_dict, model_cfg)
    except ReferenceImportError:
        raise
    except (TypeError, ValueError) as err:               # a model_cfg value that is no number
        raise ReferenceImportError(f"ms-sl reference: unreadable model_cfg value: {err}") from None
    ours = {KEY_MAP[key]: value for key, value in state_dict.items()}
    return {**{f"method.{k}": v for k, v in overrides.items()}, **data_overrides(model_cfg)}, ours


IMPORTER = register_reference_importer(
    ReferenceImporter(base="ms-sl", recognizes=recognizes, convert=convert))
