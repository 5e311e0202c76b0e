"""Finding, reading and validating reference checkpoints.

A run directory (what the reference trainer writes) holds `all_config.yaml` and `step_<N>`
files, each a `torch.save`d state dict of the loss-head-wrapped model (`model.inner.…`, with
an `_orig_mod.` prefix when the model was torch.compile'd). A checkpoint is untrusted input:
it is only ever read with `weights_only=True`, and every way it can be wrong becomes one
`InputError` naming the file and the key.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from hrm.errors import InputError
from hrm.losses import LossType
from hrm.models import Family, ModelConfig, RecursiveReasoningModel, build_model

# arch.name in all_config.yaml → model family. TRM's repository ships its own copy of HRM.
ARCH_FAMILIES: dict[str, Family] = {
    "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1": "hrm",
    "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1": "hrm",
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1": "trm",
}
LOSS_TYPES: tuple[LossType, ...] = ("stablemax_cross_entropy", "softmax_cross_entropy")
# Prefixes the reference puts in front of the model's own parameter names.
KEY_PREFIXES = ("_orig_mod.", "model.", "inner.")
STEP_FILE = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class ArchSpec:
    """What all_config.yaml says about the model (everything but the dataset-given sizes)."""

    family: Family
    loss_type: LossType
    arch: dict[str, Any]
    source: str  # the file it came from, for error messages

    def model_config(self, vocab_size: int, seq_len: int, num_puzzle_identifiers: int) -> ModelConfig:
        fields = {k: v for k, v in self.arch.items() if k in ModelConfig.model_fields}
        try:
            return ModelConfig(
                family=self.family,
                vocab_size=vocab_size,
                seq_len=seq_len,
                num_puzzle_identifiers=num_puzzle_identifiers,
                **fields,
            )
        except ValueError as err:  # pydantic.ValidationError
            first = err.errors()[0]  # type: ignore[attr-defined]
            key = ".".join(["arch", *(str(p) for p in first["loc"])])  # no loc: a check across fields
            raise InputError(f"{self.source}: {key}: {first['msg']}") from None


@dataclass
class Checkpoint:
    path: Path
    step: int | None
    spec: ArchSpec
    state: dict[str, torch.Tensor] = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    def content_hash(self) -> str:
        return file_sha256(self.path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_checkpoint_file(path: str | Path) -> Path:
    """A `step_N` file as given, or a run directory's newest `step_N`."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        steps = list_steps(path)
        if not steps:
            raise InputError(f"{path}: run directory has no step_<N> checkpoint files")
        return steps[-1][1]
    raise InputError(f"{path}: no such checkpoint file or run directory")


def list_steps(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every `step_N` file in a run directory, by increasing step."""
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_file() and (m := STEP_FILE.match(p.name))]
    return sorted(found)


def read_arch_spec(config_path: str | Path) -> ArchSpec:
    config_path = Path(config_path)
    if not config_path.is_file():
        raise InputError(f"{config_path}: missing (a checkpoint needs all_config.yaml beside it, or --config)")
    try:
        doc = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{config_path}: not valid YAML: {err}") from None
    arch = doc.get("arch") if isinstance(doc, dict) else None
    if not isinstance(arch, dict):
        raise InputError(f"{config_path}: key 'arch' is missing or not a mapping")
    name = arch.get("name")
    if name not in ARCH_FAMILIES:
        known = ", ".join(ARCH_FAMILIES)
        raise InputError(f"{config_path}: arch.name {name!r} is not a supported architecture (known: {known})")
    loss = arch.get("loss") or {}
    loss_type = loss.get("loss_type", "softmax_cross_entropy") if isinstance(loss, dict) else None
    if loss_type not in LOSS_TYPES:
        raise InputError(f"{config_path}: arch.loss.loss_type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    return ArchSpec(family=ARCH_FAMILIES[name], loss_type=loss_type, arch=arch, source=str(config_path))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors only; strip the reference's wrapper prefixes."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0]
        raise InputError(f"{path}: refused to load: it is not a plain tensor checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a torch checkpoint file ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise InputError(f"{path}: expected a state dict (name → tensor), got {type(raw).__name__}")
    return {strip_prefixes(k): v for k, v in raw.items()}


def strip_prefixes(key: str) -> str:
    for prefix in KEY_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def load_checkpoint(path: str | Path, config: str | Path | None = None) -> Checkpoint:
    """Read a checkpoint (file or run directory) and its architecture; no model is built yet."""
    file = resolve_checkpoint_file(path)
    spec = read_arch_spec(config if config is not None else file.parent / "all_config.yaml")
    match = STEP_FILE.match(file.name)
    return Checkpoint(path=file, step=int(match.group(1)) if match else None, spec=spec, state=read_state_dict(file))


def check_finite(ckpt: Checkpoint) -> None:
    for key, tensor in ckpt.state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InputError(f"{ckpt.path}: tensor {key!r} has {bad} NaN/Inf values")


def check_state_dict(ckpt: Checkpoint, model: RecursiveReasoningModel) -> None:
    """Every expected key present with the expected shape, and nothing unexpected."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ckpt.state))
    unexpected = sorted(set(ckpt.state) - set(expected))
    if missing:
        raise InputError(f"{ckpt.path}: missing keys for {ckpt.spec.family}: {', '.join(missing)}")
    if unexpected:
        raise InputError(f"{ckpt.path}: unexpected keys for {ckpt.spec.family}: {', '.join(unexpected)}")
    for key, want in expected.items():
        got = ckpt.state[key]
        if got.shape != want.shape:
            raise InputError(
                f"{ckpt.path}: tensor {key!r} has shape {tuple(got.shape)}, the config and dataset "
                f"give {tuple(want.shape)}"
            )


def build_checked_model(
    ckpt: Checkpoint,
    vocab_size: int,
    seq_len: int,
    num_puzzle_identifiers: int,
    dataset: str = "dataset",
    forward_dtype: str | None = None,
) -> RecursiveReasoningModel:
    """Build the model for the dataset's sizes and load the checkpoint into it, checking
    sizes against the tensors first (a vocab or identifier mismatch names the dataset too).
    `forward_dtype` overrides the trained activation dtype (e.g. bfloat16 for speed)."""
    check_dataset_sizes(ckpt, vocab_size, num_puzzle_identifiers, dataset)
    config = ckpt.spec.model_config(vocab_size, seq_len, num_puzzle_identifiers)
    if forward_dtype is not None:
        config = config.model_copy(update={"forward_dtype": forward_dtype})
    with torch.device("meta"):
        skeleton = build_model(config)
    check_state_dict(ckpt, skeleton)
    check_finite(ckpt)
    model = build_model(config)
    model.load_state_dict(ckpt.state, strict=True)
    return model.eval()


def check_dataset_sizes(ckpt: Checkpoint, vocab_size: int, num_puzzle_identifiers: int, dataset: str) -> None:
    state = ckpt.state
    checks = [("embed_tokens.embedding_weight", 0, vocab_size, "vocab_size"),
              ("lm_head.weight", 0, vocab_size, "vocab_size"),
              ("puzzle_emb.weights", 0, num_puzzle_identifiers, "num_puzzle_identifiers")]
    for key, dim, want, name in checks:
        if key in state and state[key].shape[dim] != want:
            raise InputError(
                f"{ckpt.path}: tensor {key!r} has shape {tuple(state[key].shape)} but {dataset} has "
                f"{name}={want}: the checkpoint was trained on a different dataset"
            )


def save_checkpoint(
    model: RecursiveReasoningModel, run_dir: str | Path, step: int, spec: ArchSpec, extra: dict[str, Any] | None = None,
    *, compiled_prefix: bool = False,
) -> Path:
    """Write `step_<N>` (and `all_config.yaml` if absent) exactly as the reference trainer
    does: keys `model.inner.<name>` (`_orig_mod.`-prefixed when `compiled_prefix`), rotary
    tables left out since the reference does not persist them."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "all_config.yaml"
    if not config_path.exists():
        config_path.write_text(yaml.safe_dump({**(extra or {}), "arch": spec.arch}, sort_keys=True))
    prefix = ("_orig_mod." if compiled_prefix else "") + "model.inner."
    state = {prefix + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    path = run_dir / f"step_{step}"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path
