"""Reading, checking and writing reference checkpoints.

A run directory (what the reference trainer writes) holds `all_config.yaml` and `step_<N>`
files, each a `torch.save`d state dict of the loss-head-wrapped model (`model.inner.…`, with
an `_orig_mod.` prefix when the model was torch.compile'd). A checkpoint is untrusted input:
it is only ever read with `weights_only=True`, and every way it can be wrong becomes one
`InputError` naming the file and the key. Checkpoints on object storage are read from a
local copy (`hrm.storage.local_copy`), since torch memory-maps the file.

Checking that a checkpoint fits a dataset needs only its tensors' names and shapes:
`read_checkpoint_header` gets them by loading under torch's fake-tensor mode through a
random-access reader, which reads the zip archive's directory and pickle (a few ranged
requests of `hrm.storage.BlockReader` blocks on object storage) and none of the tensor data.
"""

from __future__ import annotations

import os
import pickle
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import yaml
from pydantic import ValidationError
from torch._subclasses.fake_tensor import FakeTensorMode

from hrm import storage
from hrm.checkpoint.discovery import resolve_checkpoint, step_number
from hrm.data.schema import DatasetSizes
from hrm.decode import load_yaml
from hrm.errors import InputError, invalid_input
from hrm.model.losses import LossType
from hrm.model.models import Family, ModelConfig, RecursiveReasoningModel, build_model

CONFIG_FILE = "all_config.yaml"
# arch.name in all_config.yaml per family, as the reference trainers write it.
ARCH_NAMES: dict[Family, str] = {
    "hrm": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
    "trm": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
}
# Every arch.name we read. TRM's repository ships its own copy of HRM, under another name.
ARCH_FAMILIES: dict[str, Family] = {
    **{name: family for family, name in ARCH_NAMES.items()},
    "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1": "hrm",
}
LOSS_HEAD = "losses@ACTLossHead"  # arch.loss.name: the loss head the reference wraps the model in
LOSS_TYPES: tuple[LossType, ...] = ("stablemax_cross_entropy", "softmax_cross_entropy")
# Prefixes the reference puts in front of the model's own parameter names.
KEY_PREFIXES = ("_orig_mod.", "model.", "inner.")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format (since torch 1.6); older files are one pickle stream


@dataclass(frozen=True)
class ArchSpec:
    """What all_config.yaml says about the model (everything but the dataset-given sizes)."""

    family: Family
    loss_type: LossType
    arch: dict[str, Any]
    source: str  # the file it came from, for error messages

    def model_config(self, sizes: DatasetSizes) -> ModelConfig:
        fields = {k: v for k, v in self.arch.items() if k in ModelConfig.model_fields}
        try:
            return ModelConfig(family=self.family, **sizes.model_dump(), **fields)
        except ValidationError as err:
            raise invalid_input(self.source, err, within="arch") from None


@dataclass
class Checkpoint:
    uri: str  # the step file, as the user or the run names it
    path: Path | None  # a local file holding its bytes (the file itself, or a downloaded copy); None: header only
    step: int | None
    spec: ArchSpec
    state: dict[str, torch.Tensor] = field(repr=False)  # fake tensors (shapes, dtypes, no data) when header only

    @property
    def name(self) -> str:
        return f"{storage.basename(storage.parent(self.uri))}/{storage.basename(self.uri)}"

    def content_hash(self) -> str:
        if self.path is None:
            raise ValueError(f"{self.uri}: only its header was read")
        return storage.sha256(str(self.path))


def read_arch_spec(config_uri: str | os.PathLike) -> ArchSpec:
    config_uri = os.fspath(config_uri)
    if not storage.exists(config_uri):
        raise InputError(f"{config_uri}: missing (a checkpoint needs {CONFIG_FILE} beside it, or --config)")
    doc = load_yaml(storage.read_bytes(config_uri), config_uri)
    arch = doc.get("arch") if isinstance(doc, dict) else None
    if not isinstance(arch, dict):
        raise InputError(f"{config_uri}: key 'arch' is missing or not a mapping")
    name = arch.get("name")
    if name not in ARCH_FAMILIES:
        known = ", ".join(ARCH_FAMILIES)
        raise InputError(f"{config_uri}: arch.name {name!r} is not a supported architecture (known: {known})")
    loss = arch.get("loss") or {}
    loss_type = loss.get("loss_type", "softmax_cross_entropy") if isinstance(loss, dict) else None
    if loss_type not in LOSS_TYPES:
        raise InputError(f"{config_uri}: arch.loss.loss_type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    return ArchSpec(family=ARCH_FAMILIES[name], loss_type=loss_type, arch=arch, source=config_uri)


def read_state_dict(file: Path | IO[bytes], source: str, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load tensors only from `file` (a local path, or a seekable reader; errors name `source`);
    strip the reference's wrapper prefixes. `mmap`: map a local archive instead of reading it."""
    if (file.stat().st_size if isinstance(file, Path) else file.seek(0, os.SEEK_END)) == 0:
        raise InputError(f"{source}: empty file (0 bytes), not a torch checkpoint")
    if not isinstance(file, Path):
        file.seek(0)
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise InputError(f"{source}: refused to load: it is not a plain tensor checkpoint "
                         f"({unpickling_reason(err)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InputError(f"{source}: not a torch checkpoint file ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise InputError(f"{source}: expected a state dict (name → tensor), got {type(raw).__name__}")
    return {strip_prefixes(k): v for k, v in raw.items()}


def unpickling_reason(err: pickle.UnpicklingError) -> str:
    """What torch's weights-only loader refused, without the advice around it (which suggests
    loading the file unsafely). Its wording varies between cases; the refusal always says
    "unsupported"."""
    text = str(err)
    for line in text.split("WeightsUnpickler error:", 1)[-1].splitlines():
        if "nsupported" in line:
            return line.strip().split(". Please")[0].rstrip(".")
    return text.splitlines()[0]


def strip_prefixes(key: str) -> str:
    for prefix in KEY_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def load_checkpoint(uri: str | os.PathLike, config: str | os.PathLike | None = None,
                    cache_dir: str | None = None, *, mmap: bool = True) -> Checkpoint:
    """Read a checkpoint (a step file or a run directory, local or on object storage) and its
    architecture (`config`, default the all_config.yaml beside it); no model is built yet.
    Remote files are downloaded into `cache_dir` once per node."""
    file = resolve_checkpoint(os.fspath(uri))
    spec = read_arch_spec(config if config is not None else storage.sibling(file, CONFIG_FILE))
    path = storage.local_copy(file, cache_dir)
    return Checkpoint(uri=file, path=path, step=step_number(storage.basename(file)), spec=spec,
                      state=read_state_dict(path, file, mmap=mmap and zipfile.is_zipfile(path)))


def read_checkpoint_header(file: str, spec: ArchSpec, cache_dir: str | None = None) -> Checkpoint:
    """The step file `file`'s tensor names, shapes and dtypes as fake tensors, without reading
    tensor data (a checkpoint in torch's older single-stream format is read whole)."""
    with storage.BlockReader(storage.open_input_file(file)) as reader:
        if reader.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return load_checkpoint(file, spec.source, cache_dir)
        reader.seek(0)
        with FakeTensorMode():
            state = read_state_dict(reader, file)
    return Checkpoint(uri=file, path=None, step=step_number(storage.basename(file)), spec=spec, state=state)


class CheckpointChanged(InputError):
    """The planned checkpoint file was rewritten: re-plan it, it is not broken."""


def load_planned_checkpoint(uri: str, config: str, version: str | None, cache_dir: str | None = None) -> Checkpoint:
    """`load_checkpoint`, refusing a file whose bytes are not those a run planned with: its
    `hrm.storage.version` must be `version` before and after every byte is read (so the file
    is read whole, not memory-mapped). Results must never be counted under another file's identity."""
    def check(when: str) -> None:
        found = storage.version(uri)
        if version is not None and found != version:
            raise CheckpointChanged(f"{uri}: the file changed since the run was planned ({when}: {found}, "
                                    f"planned {version}); a new plan evaluates it under its new identity")

    check("before loading")
    ckpt = load_checkpoint(uri, config, cache_dir, mmap=False)
    check("after loading")
    return ckpt


def check_finite(ckpt: Checkpoint) -> None:
    for key, tensor in ckpt.state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InputError(f"{ckpt.uri}: tensor {key!r} has {bad} NaN/Inf values")


def check_state_dict(ckpt: Checkpoint, model: RecursiveReasoningModel) -> None:
    """Every expected key present with the expected shape, and nothing unexpected."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ckpt.state))
    unexpected = sorted(set(ckpt.state) - set(expected))
    if missing:
        raise InputError(f"{ckpt.uri}: missing keys for {ckpt.spec.family}: {', '.join(missing)}")
    if unexpected:
        raise InputError(f"{ckpt.uri}: unexpected keys for {ckpt.spec.family}: {', '.join(unexpected)}")
    for key, want in expected.items():
        got = ckpt.state[key]
        if got.shape != want.shape:
            raise InputError(
                f"{ckpt.uri}: tensor {key!r} has shape {tuple(got.shape)}, the config and dataset "
                f"give {tuple(want.shape)}"
            )


def check_fits(ckpt: Checkpoint, sizes: DatasetSizes, dataset: str = "dataset") -> ModelConfig:
    """The model config for the dataset's sizes, after checking that the checkpoint fits it:
    the sizes against the tensors (a vocab or identifier mismatch names the dataset), then
    every tensor's name and shape against a model built on the meta device. Reads no tensor
    data: on a memory-mapped checkpoint this costs its header."""
    _check_dataset_sizes(ckpt, sizes, dataset)
    config = ckpt.spec.model_config(sizes)
    with torch.device("meta"):
        check_state_dict(ckpt, build_model(config))
    return config


def build_checked_model(ckpt: Checkpoint, sizes: DatasetSizes, dataset: str = "dataset",
                        forward_dtype: str | None = None) -> RecursiveReasoningModel:
    """The checkpoint's model, built for the dataset's sizes and loaded, after `check_fits`
    and a NaN/Inf check. `forward_dtype` overrides the trained activation dtype (e.g.
    bfloat16 for speed)."""
    config = check_fits(ckpt, sizes, dataset)
    if forward_dtype is not None:
        config = config.model_copy(update={"forward_dtype": forward_dtype})
    check_finite(ckpt)
    model = build_model(config)
    model.load_state_dict(ckpt.state, strict=True)
    return model.eval()


def _check_dataset_sizes(ckpt: Checkpoint, sizes: DatasetSizes, dataset: str) -> None:
    state = ckpt.state
    checks = [("embed_tokens.embedding_weight", 0, sizes.vocab_size, "vocab_size"),
              ("lm_head.weight", 0, sizes.vocab_size, "vocab_size"),
              ("puzzle_emb.weights", 0, sizes.num_puzzle_identifiers, "num_puzzle_identifiers")]
    for key, dim, want, name in checks:
        if key in state and state[key].shape[dim] != want:
            raise InputError(
                f"{ckpt.uri}: tensor {key!r} has shape {tuple(state[key].shape)} but {dataset} has "
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
    config_path = run_dir / CONFIG_FILE
    if not config_path.exists():
        config_path.write_text(yaml.safe_dump({**(extra or {}), "arch": spec.arch}, sort_keys=True))
    prefix = ("_orig_mod." if compiled_prefix else "") + "model.inner."
    state = {prefix + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    path = run_dir / f"step_{step}"
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")  # a name discovery skips
    torch.save(state, tmp)
    tmp.replace(path)
    return path
