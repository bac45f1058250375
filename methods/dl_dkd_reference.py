"""Importers of the DL-DKD authors' checkpoints: ``dl-dkd`` (ICCV code, branch ``iccv``) and
``dl-dkd++`` (journal code, branch ``master``) (cards: methods/cards/dl-dkd.md,
methods/cards/dl-dkd++.md, "Reference checkpoints"; contract: ``benchmark.registry.ReferenceImporter``).

A reference ``model.ckpt`` holds ``{"model": state_dict, "model_cfg": EasyDict, "epoch": int}``.
The two codes build the same per-branch modules (docs/methods.md §5.2, §6.2) under different
attribute names, and name their two branches differently:

=========  ============================  ===================================
ours       ICCV (``iccv``)               journal (``master``)
=========  ============================  ===================================
inherit    ``B_*`` (receives the KD)     no prefix (``query_*``, ``visual_*``, ``out_mapping_linear``)
explore    ``A_*``                       ``exp_*``
=========  ============================  ===================================

Within a branch a reference module maps onto one of ours (:data:`ICCV_MODULES`,
:data:`JOURNAL_MODULES`), and the parameters inside each §2 building block are renamed by
:data:`BLOCK_PARAMETERS`. Every reference key must be placed and every key our model expects
must be found; anything left over on either side is a ``ReferenceImportError`` naming the keys.
The ICCV code allocates ``A_query_input_proj`` and never uses it (§5.6.2): it is placed on our
exploration branch's own query projection, which ``dl-dkd`` also keeps unused
(``separate_query_projection = false``), so the import is lossless and the scores unchanged.

Config overrides come from ``model_cfg`` (hidden size, heads, dropouts, margin, hard-negative
pool, label style) and from the tensor shapes (hidden size, branches present); a ``model_cfg``
that disagrees with the shapes is an error. ``max_ctx_l`` / ``max_desc_l`` are data settings
(``data.max_frames`` / ``data.max_query_tokens``), not method fields: a checkpoint whose position
tables differ from the data's fails the strict ``load_state_dict`` with both shapes named.
"""
from __future__ import annotations

from typing import Any, Mapping

from benchmark.registry import (
    ReferenceImporter,
    ReferenceImportError,
    check_reference_keys,
    key_listing,
    register_reference_importer,
)

#: Parameters of each §2 building block: reference name inside the block -> ours.
BLOCK_PARAMETERS: dict[str, dict[str, str]] = {
    # LinearLayer: LayerNorm on the input, then net = Sequential(Dropout, Linear) (+ ReLU)
    "projection": {"LayerNorm.weight": "LayerNorm.weight", "LayerNorm.bias": "LayerNorm.bias",
                   "net.1.weight": "linear.weight", "net.1.bias": "linear.bias"},
    # TrainablePositionalEncoding
    "position": {"position_embeddings.weight": "position_embeddings.weight",
                 "LayerNorm.weight": "LayerNorm.weight", "LayerNorm.bias": "LayerNorm.bias"},
    # BertAttention = self (BertSelfAttention) + output (BertSelfOutput: dense, LayerNorm)
    "attention": {**{f"self.{p}.{w}": f"{p}.{w}" for p in ("query", "key", "value")
                     for w in ("weight", "bias")},
                  "output.dense.weight": "output.weight", "output.dense.bias": "output.bias",
                  "output.LayerNorm.weight": "LayerNorm.weight",
                  "output.LayerNorm.bias": "LayerNorm.bias"},
    # modular_vector_mapping: Linear(D, 1, bias=False)
    "pool": {"weight": "weight"},
    # *_mapping_linear: Linear(D, D)
    "linear": {"weight": "weight", "bias": "bias"},
}

#: Our module inside ``branches.<b>`` -> its building block.
OUR_MODULES: dict[str, str] = {
    "query.projection": "projection", "query.position": "position", "query.encoder": "attention",
    "query.pool.score": "pool", "video.projection": "projection", "video.position": "position",
    "video.encoder": "attention", "output": "linear",
}

#: Query-side reference modules: named alike in the ICCV and the journal code.
QUERY_MODULES: dict[str, str] = {
    "query_input_proj": "query.projection", "query_pos_embed": "query.position",
    "query_encoder": "query.encoder", "modular_vector_mapping": "query.pool.score",
}

#: ICCV reference module (after the ``A_`` / ``B_`` prefix) -> our module in the branch.
ICCV_MODULES: dict[str, str] = {
    **QUERY_MODULES,
    "frame_input_proj": "video.projection", "frame_pos_embed": "video.position",
    "frame_encoder": "video.encoder", "mapping_linear": "output",
}
ICCV_PREFIXES: dict[str, str] = {"inherit": "B_", "explore": "A_"}

#: Journal reference module (after the ``""`` / ``exp_`` prefix) -> our module in the branch.
JOURNAL_MODULES: dict[str, str] = {
    **QUERY_MODULES,
    "visual_input_proj": "video.projection", "visual_pos_embed": "video.position",
    "visual_encoder": "video.encoder", "out_mapping_linear": "output",
}
JOURNAL_PREFIXES: dict[str, str] = {"inherit": "", "explore": "exp_"}

BRANCH_ORDER = ("inherit", "explore")

#: Reference ``model_cfg`` keys read into method fields (both codes), and keys knowingly not read:
#: sizes checked against the tensor shapes, data settings, runtime state and unused options.
CFG_FIELDS = {"n_heads": "num_heads", "drop": "dropout", "input_drop": "input_dropout",
              "margin": "margin", "hard_pool_size": "hard_pool_size"}
CFG_NOT_READ = frozenset({
    "visual_input_size", "query_input_size",   # checked against the input projections
    "max_ctx_l", "max_desc_l",                 # data.max_frames / data.max_query_tokens
    "map_size",                                # unused by both codes (§5.1)
    "device", "initializer_range",             # runtime; initialisation (weights are loaded)
    "use_hard_negative",                       # training state (hard_negative_start_epoch decides)
})


def _module_table(modules: Mapping[str, str], prefixes: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Full reference module name -> (branch, our module)."""
    return {prefixes[b] + ref: (b, ours) for b in BRANCH_ORDER for ref, ours in modules.items()}


#: Journal inheritance-branch module names that MS-SL's reference model also uses.
SHARED_WITH_MSSL = frozenset({"query_input_proj", "query_pos_embed", "query_encoder",
                              "modular_vector_mapping"})
ICCV_TABLE = _module_table(ICCV_MODULES, ICCV_PREFIXES)
JOURNAL_TABLE = _module_table(JOURNAL_MODULES, JOURNAL_PREFIXES)


def _head(key: str) -> str:
    return key.split(".", 1)[0]


def recognizes_iccv(state_dict: Mapping[str, Any]) -> bool:
    """An ICCV DL-DKD state dict: some module is named ``A_…`` / ``B_…`` (MS-SL and the journal
    code use no branch letters)."""
    return any(_head(k) in ICCV_TABLE for k in state_dict)


def recognizes_journal(state_dict: Mapping[str, Any]) -> bool:
    """A DL-DKD++ state dict: some module is the journal code's own (``visual_*``,
    ``out_mapping_linear`` or any ``exp_*``); MS-SL has ``frame_*`` / ``clip_*`` / ``mapping_linear``
    and the ICCV code prefixes every module with ``A_`` / ``B_``."""
    return any(_head(k) in JOURNAL_TABLE and _head(k) not in SHARED_WITH_MSSL for k in state_dict)


def _ref_keys(table: Mapping[str, tuple[str, str]], branches: tuple[str, ...]) -> dict[str, str]:
    """Every reference key of ``branches`` -> our state-dict key."""
    out = {}
    for ref_module, (branch, ours) in table.items():
        if branch in branches:
            for ref_param, our_param in BLOCK_PARAMETERS[OUR_MODULES[ours]].items():
                out[f"{ref_module}.{ref_param}"] = f"branches.{branch}.{ours}.{our_param}"
    return out


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(getattr(tensor, "shape", ()))


def _convert(state_dict: Mapping[str, Any], model_cfg: Mapping[str, Any], *, base: str,
             table: Mapping[str, tuple[str, str]], hidden_keys: Mapping[str, str],
             shares_query_projection: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rename ``state_dict`` through ``table`` and read the overrides (module docstring).

    ``hidden_keys``: model_cfg hidden-size key -> branch.
    """
    present = tuple(b for b in BRANCH_ORDER
                    if any(table.get(_head(k), ("",))[0] == b for k in state_dict))
    if not present:
        raise ReferenceImportError(f"{base} reference checkpoint: no key of either branch found "
                                   f"(first keys: {key_listing(sorted(state_dict), 4)})")
    if shares_query_projection and "inherit" not in present:
        # the ICCV exploration branch encodes queries with B's (inheritance) input projection
        present = ("inherit", "explore")
    expected = _ref_keys(table, present)
    check_reference_keys(base, state_dict, expected)
    ours = {expected[k]: v for k, v in state_dict.items()}

    # sizes from the shapes, checked against model_cfg
    hidden = {b: _shape(ours[f"branches.{b}.output.weight"])[0] for b in present}
    if len(set(hidden.values())) != 1:
        raise ReferenceImportError(f"{base} reference checkpoint: branch hidden sizes differ "
                                   f"({hidden}); prvr-bench's {base} has one hidden_size")
    size = next(iter(hidden.values()))
    for cfg_key, branch in hidden_keys.items():
        if branch in present and cfg_key in model_cfg and int(model_cfg[cfg_key]) != size:
            raise ReferenceImportError(f"{base} reference checkpoint: model_cfg {cfg_key}="
                                       f"{model_cfg[cfg_key]} but the tensors have hidden size {size}")
    for cfg_key, our_key in (("query_input_size", "query.projection.linear.weight"),
                             ("visual_input_size", "video.projection.linear.weight")):
        got = _shape(ours[f"branches.{present[0]}.{our_key}"])[1]
        if cfg_key in model_cfg and int(model_cfg[cfg_key]) != got:
            raise ReferenceImportError(f"{base} reference checkpoint: model_cfg {cfg_key}="
                                       f"{model_cfg[cfg_key]} but the input projection takes {got}")

    overrides: dict[str, Any] = {"hidden_size": size}
    for cfg_key, field_name in CFG_FIELDS.items():
        if cfg_key in model_cfg:
            value = model_cfg[cfg_key]
            overrides[field_name] = float(value) if field_name in ("dropout", "input_dropout",
                                                                   "margin") else int(value)
    if "num_heads" not in overrides:
        raise ReferenceImportError(f"{base} reference checkpoint: model_cfg has no n_heads "
                                   "(the number of attention heads cannot be read from the shapes)")
    if "label_style" in model_cfg:
        overrides["label_style"] = str(model_cfg["label_style"])
    overrides["double_branch"] = len(present) == 2
    if len(present) == 1:
        overrides["single_branch"] = present[0]
    overrides["separate_query_projection"] = not shares_query_projection
    return {f"method.{k}": v for k, v in overrides.items()}, ours


def convert_iccv(state_dict: Mapping[str, Any],
                 model_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """ICCV ``DLDKD`` (``A_*`` explore, ``B_*`` inherit) -> ``dl-dkd``."""
    return _convert(state_dict, model_cfg, base="dl-dkd", table=ICCV_TABLE,
                    hidden_keys={"B_hidden_size": "inherit", "A_hidden_size": "explore"},
                    shares_query_projection=True)


def convert_journal(state_dict: Mapping[str, Any],
                    model_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Journal ``DLDKD`` (no prefix inherit, ``exp_*`` explore) -> ``dl-dkd++``."""
    return _convert(state_dict, model_cfg, base="dl-dkd++", table=JOURNAL_TABLE,
                    hidden_keys={"inheritance_hidden": "inherit", "exploration_hidden": "explore"},
                    shares_query_projection=False)


register_reference_importer(ReferenceImporter(base="dl-dkd", recognizes=recognizes_iccv,
                                              convert=convert_iccv))
register_reference_importer(ReferenceImporter(base="dl-dkd++", recognizes=recognizes_journal,
                                              convert=convert_journal))
