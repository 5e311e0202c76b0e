"""Checkpoint health: parameters and bytes per component, dtypes, NaN/Inf counts, and the
relative weight change between two checkpoints — all read from the tensors themselves."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from hrm.checkpoint.loading import Checkpoint
from hrm.errors import InputError

# Components in model order; a tensor belongs to the first whose prefix it starts with.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("puzzle embeddings", ("puzzle_emb.",)),
    ("token embeddings", ("embed_tokens.", "embed_pos.")),
    ("initial states", ("H_init", "L_init")),
    ("H level", ("H_level.",)),
    ("L level", ("L_level.",)),
    ("lm head", ("lm_head.",)),
    ("q head", ("q_head.",)),
)


def component_of(key: str) -> str:
    for name, prefixes in COMPONENTS:
        if key.startswith(prefixes):
            return name
    return "other"


@dataclass
class ComponentStats:
    component: str
    tensors: int = 0
    parameters: int = 0
    bytes: int = 0
    dtypes: str = ""
    nan: int = 0
    inf: int = 0


def component_stats(ckpt: Checkpoint) -> list[ComponentStats]:
    """One row per component present in the checkpoint, plus a "total" row."""
    rows: dict[str, ComponentStats] = {}
    dtypes: dict[str, set[str]] = {}
    for key, tensor in ckpt.state.items():
        name = component_of(key)
        row = rows.setdefault(name, ComponentStats(name))
        row.tensors += 1
        row.parameters += tensor.numel()
        row.bytes += tensor.numel() * tensor.element_size()
        dtypes.setdefault(name, set()).add(str(tensor.dtype).removeprefix("torch."))
        if tensor.is_floating_point():
            row.nan += int(torch.isnan(tensor).sum())
            row.inf += int(torch.isinf(tensor).sum())
    order = [name for name, _ in COMPONENTS] + ["other"]
    result = [rows[name] for name in order if name in rows]
    for row in result:
        row.dtypes = ",".join(sorted(dtypes[row.component]))
    total = ComponentStats("total", dtypes=",".join(sorted(set().union(*dtypes.values()))))
    for row in result:
        total.tensors += row.tensors
        total.parameters += row.parameters
        total.bytes += row.bytes
        total.nan += row.nan
        total.inf += row.inf
    return result + [total]


def relative_change(before: Checkpoint, after: Checkpoint) -> dict[str, float | None]:
    """Per component ‖after − before‖ / ‖before‖ (None where the component's norm is 0, e.g.
    zero-initialised puzzle embeddings). Only checkpoints of one architecture compare: over
    the few tensors two different models happen to share, a "total" would mean nothing."""
    difference = architecture_difference(before, after)
    if difference:
        raise InputError(f"{after.uri}: not the same architecture as {before.uri} ({difference}); weight "
                         f"change is measured between checkpoints of one model")
    diff_sq: dict[str, float] = {}
    base_sq: dict[str, float] = {}
    for key, old in before.state.items():
        new = after.state[key]
        if not old.is_floating_point():
            continue
        name = component_of(key)
        old64, new64 = old.double(), new.double()
        diff_sq[name] = diff_sq.get(name, 0.0) + float((new64 - old64).square().sum())
        base_sq[name] = base_sq.get(name, 0.0) + float(old64.square().sum())
    diff_sq["total"], base_sq["total"] = sum(diff_sq.values()), sum(base_sq.values())
    return {name: (math.sqrt(diff_sq[name] / base_sq[name]) if base_sq[name] > 0 else None) for name in diff_sq}


def architecture_difference(first: Checkpoint, second: Checkpoint) -> str | None:
    """How the two checkpoints' tensors differ in names or shapes (the first few), or None."""
    differences = [f"tensor '{key}' only in the first" for key in first.state if key not in second.state]
    differences += [f"tensor '{key}' only in the second" for key in second.state if key not in first.state]
    differences += [f"tensor '{key}' has shape {tuple(tensor.shape)} vs {tuple(second.state[key].shape)}"
                    for key, tensor in first.state.items()
                    if key in second.state and tensor.shape != second.state[key].shape]
    if not differences:
        return None
    more = f" and {len(differences) - 3} more difference(s)" if len(differences) > 3 else ""
    return "; ".join(differences[:3]) + more


def describe(ckpt: Checkpoint) -> dict:
    """Everything `hrm-eval inspect` shows for one checkpoint, JSON-able."""
    arch = {k: v for k, v in ckpt.spec.arch.items() if k != "loss"}
    return {
        "checkpoint": ckpt.uri,
        "step": ckpt.step,
        "family": ckpt.spec.family,
        "loss_type": ckpt.spec.loss_type,
        "arch": arch,
        "inferred": inferred_sizes(ckpt),
        "disagreements": config_disagreements(arch, inferred_sizes(ckpt)),
        "components": [asdict(row) for row in component_stats(ckpt)],
    }


def config_disagreements(arch: dict, inferred: dict[str, int]) -> dict[str, dict[str, object]]:
    """Sizes where all_config.yaml says one thing and the tensors another: the tensors are
    what the checkpoint holds, so they are shown, and the config's figure beside them."""
    return {key: {"tensors": value, "config": arch[key]}
            for key, value in inferred.items() if key in arch and arch[key] != value}


def inferred_sizes(ckpt: Checkpoint) -> dict[str, int]:
    """Sizes that all_config.yaml does not hold but the tensors reveal."""
    state, sizes = ckpt.state, {}
    if "embed_tokens.embedding_weight" in state:
        sizes["vocab_size"], sizes["hidden_size"] = state["embed_tokens.embedding_weight"].shape
    if "puzzle_emb.weights" in state:
        sizes["num_puzzle_identifiers"] = state["puzzle_emb.weights"].shape[0]
    return {k: int(v) for k, v in sizes.items()}
