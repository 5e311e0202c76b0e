"""The run config: one YAML file (plus `--set a.b=value` overrides) describing a whole
evaluation job — which checkpoints, which data, how to evaluate, how many actors, where the
results go.

Everything is validated here, before Ray starts: unknown keys are errors (a typo such as
`batch_sise` fails naming the key instead of being silently ignored), and so is any value
out of range. Every problem is reported at once as one `InputError`.

The `voting`, `tta` and `ensembles` sections are validated here and carried into the
manifest; they are executed on the stored predictions after the evaluation units finish.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from hrm.checkpoint.discovery import STEP_GLOB
from hrm.decode import load_yaml, read_text
from hrm.errors import InputError, invalid_input
from hrm.eval.engine import CompileMode, EngineSettingError, Protocol, check_compile_mode
from hrm.eval.votes import PASS_KS
from hrm.model.models import Dtype


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointSource(Strict):
    """One entry of `checkpoints:` — either one checkpoint (`path`) or a sweep over a
    training run (`run`: a directory or s3:// prefix holding all_config.yaml and step_N files)."""

    path: str | None = Field(None, description="a step_N file, or a run directory / prefix (→ its newest step)")
    run: str | None = Field(None, description="a run directory or s3:// prefix: every file matching `glob`")
    glob: str = Field(STEP_GLOB, description="file-name pattern within `run`")
    min_step: int | None = Field(None, ge=0, description="keep steps >= min_step")
    max_step: int | None = Field(None, ge=0, description="keep steps <= max_step")
    every: int | None = Field(None, ge=1, description="keep every Nth step, counted back from the newest")
    last: int | None = Field(None, ge=1, description="keep only the newest K steps (after the other filters)")
    config: str | None = Field(None, description="the training config (all_config.yaml) when not beside the steps")
    name: str | None = Field(None, description="name in results (default: <run dir>-<file>); a sweep appends -<file>")

    @model_validator(mode="after")
    def _one_kind(self) -> CheckpointSource:
        if (self.path is None) == (self.run is None):
            raise ValueError("give exactly one of `path` (one checkpoint) or `run` (a sweep)")
        if self.path is not None and self._filters_set():
            raise ValueError("glob/min_step/max_step/every/last select steps of a `run`, not of a `path`")
        if self.min_step is not None and self.max_step is not None and self.min_step > self.max_step:
            raise ValueError(f"min_step {self.min_step} > max_step {self.max_step}")
        return self

    def _filters_set(self) -> bool:
        # By value, not by `model_fields_set`: a config read back from a manifest carries every
        # field written out, defaults included, and must validate as it did the first time.
        filters = (self.min_step, self.max_step, self.every, self.last)
        return self.glob != STEP_GLOB or any(value is not None for value in filters)


class DatasetConfig(Strict):
    uri: str = Field(description="dataset directory or URI (reference numpy layout or ours)")
    split: str = "test"
    sets: list[str] | None = Field(None, description="only these sets of the split (default: all)")
    limit: int | None = Field(None, ge=1, description="only the first N examples of each set: a quick, partial look "
                              "(recorded in every output and flagged there as limited)")
    sample_seed: int | None = Field(None, ge=0, description="with limit: N examples of each set drawn without "
                                    "replacement by numpy's default_rng(sample_seed), kept in dataset order, instead "
                                    "of the first N (None: the first N)")

    @model_validator(mode="after")
    def _sample_needs_limit(self) -> DatasetConfig:
        if self.sample_seed is not None and self.limit is None:
            raise ValueError(f"sample_seed {self.sample_seed} without limit: a seeded sample draws `limit` examples of "
                             "each set; give dataset.limit too")
        return self


def limited_to(limit: int | None, sample_seed: int | None = None) -> str | None:
    """What a limited evaluation covers, as every output words it; None when it is not limited."""
    if limit is None:
        return None
    if sample_seed is None:
        return f"the first {limit} examples of each set"
    return f"a seeded sample of {limit} (seed {sample_seed}) of each set's examples"


class EvalConfig(Strict):
    """How each example is evaluated. Every field here changes results, so all of them go
    into the identity of a work unit."""

    protocol: Protocol = "fixed"
    steps: int | None = Field(None, ge=1, description="ACT steps (fixed) or the maximum (adaptive); default halt_max_steps")
    min_steps: int = Field(1, ge=1, description="adaptive: the earliest step an example may halt")
    batch_size: int = Field(256, ge=1)
    dtype: Dtype | None = Field(None, description="activation dtype (default: the checkpoint's forward_dtype)")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="auto: cuda when GPUs are given to actors")
    compile: bool = Field(False, description="torch.compile the reasoning modules (see hrm.eval.engine): faster after "
                          "a one-off compilation per actor, equal to eager up to float rounding")
    compile_mode: CompileMode | None = Field(
        None, description="with compile: torch.compile's mode (default: torch's); reduce-overhead runs CUDA graphs "
        "(CUDA only), max-autotune tries several kernels per matmul (a longer compilation)")

    @model_validator(mode="after")
    def _min_steps_within_steps(self) -> EvalConfig:
        if self.steps is not None and self.min_steps > self.steps:
            raise ValueError(f"min_steps {self.min_steps} > steps {self.steps}: an example runs at most `steps` steps")
        return self


class ActorRange(Strict):
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ActorRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        return self


# A callable discriminator picks the branch from the value's shape, so a bad value gets the
# errors of the branch the user meant instead of one per union member. The tags are not keys
# the user writes, so error messages leave them out.
ACTOR_COUNT_TAGS = ("count", "range")
ActorCount = Annotated[
    Annotated[int, Field(ge=1), Tag("count")] | Annotated[ActorRange, Tag("range")],
    Discriminator(lambda v: "range" if isinstance(v, (dict, ActorRange)) else "count"),
]


class ClusterConfig(Strict):
    """Actors and scheduling; none of it changes results."""

    actors: ActorCount = Field(2, description="a number, or {min, max}: start with what fits, up to max")
    gpus_per_actor: float = Field(0.0, ge=0, description="fractions share a GPU between actors")
    # Fractional by default: on a 2-core node, actors holding a whole CPU each leave none for
    # anything else (docs/ray.md, "CPUs"). torch_threads sets the real compute parallelism.
    cpus_per_actor: float = Field(0.5, gt=0)
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads per actor (default: cpus_per_actor rounded up)")
    cache_size: int = Field(2, ge=1, description="built models each actor keeps (LRU)")
    shard_size: int = Field(4096, ge=1, description="examples per work unit (rounded up to whole batches)")
    units_in_flight: int = Field(2, ge=1, description="units queued per actor, so the next one is ready when one ends")
    max_attempts: int = Field(3, ge=1, description="tries per unit before the run fails")
    checkpoint_cache_dir: str | None = Field(None, description="where s3:// checkpoints are downloaded (default: a temp dir)")
    wait_for_nodes: bool = Field(False, description="on an autoscaling cluster: wait (up to 10 minutes) for nodes "
                                                    "that can hold an actor, instead of failing at once when none can")

    @property
    def actor_torch_threads(self) -> int:
        return self.torch_threads or max(1, math.ceil(self.cpus_per_actor))

    @property
    def actor_range(self) -> tuple[int, int]:
        if isinstance(self.actors, int):
            return self.actors, self.actors
        return self.actors.min, self.actors.max


class VotingConfig(Strict):
    """ARC augmentation voting over the stored predictions."""

    enabled: bool = False
    pass_k: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: list(PASS_KS), min_length=1)
    submission: bool = Field(True, description="also write an ARC-Prize-style submission.json")


class TTAConfig(Strict):
    """Test-time augmentation: the run also evaluates `copies` transformed copies of the data,
    maps their predictions back, and votes per example over them and the plain copy.

    The transform family is named, not guessed from the data: only Sudoku and maze boards have
    invertible transforms here (ARC uses `voting`, its augmentations are in the dataset)."""

    enabled: bool = False
    transform: Literal["sudoku", "maze"] | None = Field(
        None, description="sudoku: digit permutation, band/stack shuffles, transpose; maze: dihedral (copies <= 7)")
    copies: int = Field(8, ge=1, description="transformed copies besides the plain data")
    seed: int = 0
    level: Literal["sequence", "token"] = Field("sequence", description="vote whole sequences or token by token")

    @model_validator(mode="after")
    def _transform_named(self) -> TTAConfig:
        if self.enabled and self.transform is None:
            raise ValueError("tta.transform is required when tta.enabled: sudoku or maze "
                             "(ARC: use voting, its augmentations are in the dataset)")
        return self


class EnsembleConfig(Strict):
    # The name becomes part of file names under votes/: no separators, no leading dot.
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    members: list[str] | None = Field(None, description="checkpoint names")
    top_k: int | None = Field(None, ge=1, description="the k best checkpoints by exact accuracy")
    method: Literal["sequence", "token", "both"] = "both"

    @model_validator(mode="after")
    def _one_selection(self) -> EnsembleConfig:
        if (self.members is None) == (self.top_k is None):
            raise ValueError("give exactly one of `members` or `top_k`")
        return self


class OutputConfig(Strict):
    uri: str = Field("results", description="results root: a local directory or s3:// prefix")
    run_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="default: <timestamp>-<config hash>; give an existing one to resume it",
    )
    quoted_figures: str | None = Field(
        None, description="a YAML file of figures about other systems (a list of system, figure, value, source): "
        "the report shows them apart from the measured model card, labelled as quoted")
    log_samples: bool = Field(
        False, description="also store each example's inputs and labels (token ids) in its prediction row, "
        "as `hrm-eval evaluate --log-samples` does; switching it re-evaluates a resumed run's units, whose "
        "stored predictions would otherwise lack (or hold) them",
    )


class RunConfig(Strict):
    checkpoints: list[CheckpointSource] = Field(min_length=1)
    dataset: DatasetConfig
    eval: EvalConfig = EvalConfig()
    cluster: ClusterConfig = ClusterConfig()
    voting: VotingConfig = VotingConfig()
    tta: TTAConfig = TTAConfig()
    ensembles: list[EnsembleConfig] = Field(default_factory=list)
    audits: list[Literal["overlap"]] = Field(
        default_factory=list, description="overlap: also audit the test split for examples that occur in the train "
        "split, exactly or up to augmentation (hrm.audits.overlap); the report shows what it finds")
    ablations: list[Literal["blank_puzzle_ids", "shuffled_puzzle_ids"]] = Field(
        default_factory=list, description="evaluate every checkpoint again with its puzzle identifiers blanked or "
        "shuffled (hrm.eval.ablation): how much its accuracy rests on recalling the puzzle's learned embedding")
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _audit_of_the_test_split(self) -> RunConfig:
        if "overlap" in self.audits and self.dataset.split != "test":
            raise ValueError(f"audits: overlap audits the test split against the train split, but dataset.split is "
                             f"{self.dataset.split!r}")
        return self

    @model_validator(mode="after")
    def _ablations_once(self) -> RunConfig:
        if len(set(self.ablations)) != len(self.ablations):
            raise ValueError(f"ablations: {self.ablations} names one ablation twice")
        return self

    @model_validator(mode="after")
    def _votes_see_whole_puzzles(self) -> RunConfig:
        if self.voting.enabled and self.dataset.limit is not None:
            raise ValueError("voting.enabled with dataset.limit: ARC voting needs every augmented version of each "
                             "test puzzle, which the first N examples do not hold")
        return self

    @model_validator(mode="after")
    def _device_has_gpus(self) -> RunConfig:
        if self.eval.device == "cuda" and self.cluster.gpus_per_actor == 0:
            raise ValueError("eval.device is cuda but cluster.gpus_per_actor is 0: Ray would give actors no GPU")
        return self

    @model_validator(mode="after")
    def _compile_mode_runs_here(self) -> RunConfig:
        try:  # the engine's own check, on the device the actors will use
            check_compile_mode(self.eval.compile, self.eval.compile_mode, torch.device(self.device))
        except EngineSettingError as err:
            raise ValueError(f"eval.compile_mode: {err}") from None
        return self

    @property
    def device(self) -> str:
        if self.eval.device == "auto":
            return "cuda" if self.cluster.gpus_per_actor > 0 else "cpu"
        return self.eval.device

    def eval_identity(self) -> dict[str, Any]:
        """What decides an example's result besides checkpoint and data: part of every unit id.
        The device is in it because CPU and GPU kernels round differently. A compile_mode is in it
        only when set, so that units evaluated before it existed keep their ids."""
        exclude = {"compile_mode"} if self.eval.compile_mode is None else set()
        return {"split": self.dataset.split, **self.eval.model_dump(exclude=exclude), "device": self.device}

    def config_hash(self) -> str:
        """Hash of the whole config except the run id (which defaults to it)."""
        doc = self.model_dump(mode="json")
        doc["output"].pop("run_id")
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def resolved_run_id(self, now: float | None = None) -> str:
        if self.output.run_id is not None:
            return self.output.run_id
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        return f"{stamp}-{self.config_hash()[:8]}"


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply `a.b=value` overrides, validate. Raises InputError
    listing every invalid key."""
    path = Path(path)
    doc = load_yaml(read_text(path), str(path))
    if not isinstance(doc, dict):
        raise InputError(f"{path}: a run config is a mapping of sections (checkpoints, dataset, eval, …)")
    for override in overrides or []:
        apply_override(doc, override)
    return validate_run_config(doc, source=str(path))


def validate_run_config(doc: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(doc)
    except ValidationError as err:
        raise invalid_input(source, err, hidden=ACTOR_COUNT_TAGS) from None


def apply_override(doc: dict[str, Any], override: str) -> None:
    """`eval.batch_size=128`, `checkpoints.0.last=3`: the value is parsed as YAML, so
    numbers, booleans, null and lists come out typed."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise InputError(f"--set {override!r}: expected KEY=VALUE, e.g. eval.batch_size=128")
    value = load_yaml(raw, f"--set {key}")
    parts = key.split(".")
    node: Any = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError(f"--set {key}: {where}: no such list item (the list has {len(node)})")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
        else:
            raise InputError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a section")
        if last:
            node[index] = value
        else:
            if isinstance(node, dict) and node.get(index) is None:
                node[index] = {}
            node = node[index]
