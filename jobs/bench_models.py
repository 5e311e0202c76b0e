"""The models the benchmarks run: the paper's Sudoku HRM, the TRM paper's Sudoku TRM (its
attention variant) and the small HRM of the conformance vectors, as model-config fields
(`model_fields`) and as the `arch` section of the all_config.yaml that a checkpoint of them
carries (`arch_section`)."""

from __future__ import annotations

from typing import Any

from hrm.checkpoint.loading import ARCH_NAMES, LOSS_HEAD

CONFIGS: dict[str, dict[str, Any]] = {
    "paper": dict(hidden_size=512, num_heads=8, H_layers=4, L_layers=4, halt_max_steps=16, puzzle_emb_ndim=512),
    "small": dict(hidden_size=128, num_heads=2, H_layers=2, L_layers=2, halt_max_steps=8, puzzle_emb_ndim=128),
    # one 2-layer network run (L_cycles + 1) × H_cycles times per step; 16 prefix positions for the puzzle embedding
    "trm": dict(family="trm", hidden_size=512, num_heads=8, H_layers=0, L_layers=2, H_cycles=3, L_cycles=6,
                halt_max_steps=16, puzzle_emb_ndim=512, puzzle_emb_len=16, mlp_t=False, no_ACT_continue=True),
}
SUDOKU = dict(family="hrm", vocab_size=11, seq_len=81, num_puzzle_identifiers=2, expansion=4, H_cycles=2, L_cycles=2,
              pos_encodings="rope")
DATASET_FIELDS = ("family", "vocab_size", "seq_len", "num_puzzle_identifiers")  # given by the data, not the config


def model_fields(name: str, dtype: str = "float32") -> dict[str, Any]:
    return {**SUDOKU, **CONFIGS[name], "forward_dtype": dtype}


def arch_section(name: str) -> dict[str, Any]:
    """all_config.yaml's `arch` for model `name`, as the reference trainer writes it."""
    fields = model_fields(name)
    arch = {k: v for k, v in fields.items() if k not in DATASET_FIELDS}
    return {"name": ARCH_NAMES[fields["family"]], "loss": {"name": LOSS_HEAD, "loss_type": "softmax_cross_entropy"},
            "halt_exploration_prob": 0.1, **arch}
