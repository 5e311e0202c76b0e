"""A small trainer for HRM and TRM that writes checkpoints in the reference format.

It exists to make realistic checkpoints for the demo and the tests, not to compete with the
reference trainer (`pretrain.py` in sapientinc/HRM). It trains the way the reference does,
scaled down to a CPU:

- ACT with a carry across batches: every batch slot holds one example and its latent state
  (z_H, z_L); each training step runs one ACT step on every slot, and slots whose example
  halted are refilled with fresh training examples before the next step.
- Halting in training: an example halts when q_halt > q_continue (q_halt > 0 for TRM trained
  without the continue head), never before a random minimum step drawn with probability
  `halt_exploration_prob`, and always at `halt_max_steps`.
- The 1-step gradient: only the last inner cycle of each ACT step gets gradients (that lives
  in `RecursiveReasoningModel.recurse`); the carry is detached between steps.
- Loss per example = mean token loss over valid tokens (stablemax or softmax CE)
  + 0.5 · (BCE of q_halt against "sequence exactly correct"
           + BCE of q_continue against the bootstrap target, where the model has that head),
  averaged over the batch.

Deliberate differences from the reference: plain `torch.optim.AdamW` instead of AdamATan2,
a linear warm-up then a constant learning rate (the reference's configs use lr_min_ratio 1.0,
which is the same shape), checkpoints of an EMA of the weights by default (TRM's `ema`
option; HRM's trainer saves the raw weights), and no puzzle embedding training (the demo
uses puzzle_emb_ndim 0; a model with puzzle embeddings trains with them frozen at zero, as
they are buffers).

Data: the train split of any dataset `hrm.data.reader.open_dataset` reads (ours or the
reference layout). Output: a local run directory like the reference's, `all_config.yaml` (the
training config dump, `arch:` + top-level keys) and `step_<N>` files
(`hrm.checkpoint.loading.save_checkpoint`: state dicts with keys `model.inner.<parameter
name>`), plus `train_log.jsonl` (progress) and `train_summary.json` (written last: the run
finished). `hrm-eval demo` trains the demo model with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hrm import storage
from hrm.checkpoint.discovery import step_files
from hrm.checkpoint.loading import ARCH_NAMES, CONFIG_FILE, LOSS_HEAD, read_arch_spec, save_checkpoint
from hrm.data.dataset import Dataset
from hrm.decode import load_yaml
from hrm.errors import InputError
from hrm.model.losses import LossType, token_losses
from hrm.model.models import ModelConfig, RecursiveReasoningModel, build_model

log = logging.getLogger(__name__)

LOG_FILE, SUMMARY_FILE = "train_log.jsonl", "train_summary.json"
TRM_ONLY_FIELDS = ("mlp_t", "puzzle_emb_len", "no_ACT_continue")
NOT_ARCH_FIELDS = ("family", "vocab_size", "seq_len", "num_puzzle_identifiers")


# --------------------------------------------------------------------------- configuration


class TrainConfig(BaseModel):
    """Everything that decides the trained weights, besides the data and the step count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelConfig
    loss_type: LossType = "stablemax_cross_entropy"
    # Defaults tuned for the 4×4 demo on CPU. The reference's lr 1e-4 barely moves in minutes;
    # at 3e-3, weight decay 0.3 learned faster than 0.1 and 0.01 (0.01 stalled at the
    # copy-the-givens plateau), and batch 128 costs less CPU per example than 64 or 32.
    global_batch_size: int = 128
    lr: float = 3e-3
    lr_warmup_steps: int = 100
    weight_decay: float = 0.3
    beta1: float = 0.9
    beta2: float = 0.95
    # Checkpoints hold an exponential moving average of the weights (TRM's option). At a
    # constant learning rate the raw weights swing by ±10 points of held-out exact from one
    # checkpoint to the next; with rate 0.995 the demo's curve rose steadily and ended at
    # 79% instead of 58% after 1600 steps (0.999, TRM's default, lags too far for a short run).
    ema: bool = True
    ema_rate: float = 0.995
    seed: int = 0


# The demo models: the reference architectures at their smallest sensible size (≈132k
# parameters each), in float32 because bfloat16 is slow and lossy to train on a CPU.
DEMO_MODELS = {
    "hrm": ModelConfig(
        family="hrm", vocab_size=6, seq_len=16, num_puzzle_identifiers=1,
        hidden_size=64, num_heads=2, expansion=4, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2,
        halt_max_steps=4, halt_exploration_prob=0.1, puzzle_emb_ndim=0, pos_encodings="rope",
        forward_dtype="float32",
    ),
    "trm": ModelConfig(
        family="trm", vocab_size=6, seq_len=16, num_puzzle_identifiers=1,
        hidden_size=64, num_heads=2, expansion=4, H_layers=0, L_layers=2, H_cycles=2, L_cycles=2,
        halt_max_steps=4, halt_exploration_prob=0.1, puzzle_emb_ndim=0, puzzle_emb_len=0,
        pos_encodings="rope", forward_dtype="float32",
    ),
}


@dataclass(frozen=True)
class Examples:
    """A split as training and evaluation use it: one identifier per example (not per puzzle)."""

    inputs: np.ndarray  # [n, seq_len] int
    labels: np.ndarray  # [n, seq_len] int
    puzzle_identifiers: np.ndarray  # [n] int
    ignore_label_id: int | None  # labels equal to it do not count

    def __len__(self) -> int:
        return len(self.inputs)


# --------------------------------------------------------------------------- ACT training step


@dataclass
class Carry:
    """The batch as ACT sees it: one example per slot, its latent state and step count."""

    z_H: torch.Tensor
    z_L: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor
    identifiers: torch.Tensor
    steps: torch.Tensor  # ACT steps taken by the slot's current example
    halted: torch.Tensor  # the slot's example is done; refill before the next step


def empty_carry(model: RecursiveReasoningModel, batch_size: int) -> Carry:
    """All slots halted, so the first step fills every one of them."""
    z_H, z_L = model.initial_state(batch_size, torch.device("cpu"))
    seq_len = model.config.seq_len
    return Carry(
        z_H=z_H, z_L=z_L,
        inputs=torch.zeros(batch_size, seq_len, dtype=torch.int64),
        labels=torch.zeros(batch_size, seq_len, dtype=torch.int64),
        identifiers=torch.zeros(batch_size, dtype=torch.int64),
        steps=torch.zeros(batch_size, dtype=torch.int64),
        halted=torch.ones(batch_size, dtype=torch.bool),
    )


def refill(carry: Carry, model: RecursiveReasoningModel, data: Examples, indices: np.ndarray) -> None:
    """Put examples `indices` of `data` into the halted slots (in slot order), fresh state."""
    rows = carry.halted.nonzero().squeeze(-1)
    z_H, z_L = model.initial_state(len(rows), torch.device("cpu"))
    carry.z_H[rows], carry.z_L[rows] = z_H, z_L
    carry.inputs[rows] = torch.from_numpy(data.inputs[indices].astype(np.int64))
    carry.labels[rows] = torch.from_numpy(data.labels[indices].astype(np.int64))
    carry.identifiers[rows] = torch.from_numpy(data.puzzle_identifiers[indices].astype(np.int64))
    carry.steps[rows] = 0
    carry.halted[rows] = False


def act_step(
    model: RecursiveReasoningModel, carry: Carry, config: TrainConfig, ignore_label_id: int | None,
    rng: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One ACT step on every slot: returns the batch loss (with gradients) and statistics of
    the examples that halted at this step. Updates the carry in place (detached)."""
    cfg = model.config
    x = model.embed(carry.inputs, carry.identifiers)
    z_H, z_L, logits, q = model(carry.z_H, carry.z_L, x)
    q_halt, q_continue = q[:, 0], q[:, 1]
    carry.z_H, carry.z_L = z_H.detach(), z_L.detach()
    carry.steps += 1

    valid = carry.labels != (-1 if ignore_label_id is None else ignore_label_id)  # tokens are never negative
    with torch.no_grad():
        exact = ((logits.argmax(-1) == carry.labels) | ~valid).all(-1)
        carry.halted = should_halt(carry.steps, q_halt, q_continue, cfg, rng)

    per_token = token_losses(logits, carry.labels, valid, config.loss_type)
    lm_loss = per_token.sum(-1) / valid.sum(-1).clamp_min(1)
    q_loss = F.binary_cross_entropy_with_logits(q_halt, exact.float(), reduction="none")
    if uses_continue_head(cfg):
        target = bootstrap_target(model, carry, x, cfg)
        q_loss = q_loss + F.binary_cross_entropy_with_logits(q_continue, target, reduction="none")
    loss = (lm_loss + 0.5 * q_loss).mean()

    halted = carry.halted
    stats = {"halted": float(halted.sum()), "halted_exact": float((halted & exact).sum()),
             "halted_steps": float(carry.steps[halted].sum()), "lm_loss": lm_loss.mean().item()}
    return loss, stats


def uses_continue_head(cfg: ModelConfig) -> bool:
    return cfg.family == "hrm" or not cfg.no_ACT_continue


def should_halt(
    steps: torch.Tensor, q_halt: torch.Tensor, q_continue: torch.Tensor, cfg: ModelConfig, rng: torch.Generator
) -> torch.Tensor:
    """The reference's training halting rule, exploration included."""
    halted = steps >= cfg.halt_max_steps
    if cfg.halt_max_steps > 1:
        wants = q_halt > q_continue if uses_continue_head(cfg) else q_halt > 0
        explore = torch.rand(len(steps), generator=rng) < cfg.halt_exploration_prob
        min_steps = explore * torch.randint(2, cfg.halt_max_steps + 1, (len(steps),), generator=rng)
        halted = halted | (wants & (steps >= min_steps))
    return halted


@torch.no_grad()
def bootstrap_target(model: RecursiveReasoningModel, carry: Carry, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Q-learning target for q_continue: the value of the best action one step later (no
    replay buffer or target network; the batch is many parallel environments, as in PQN)."""
    _, _, _, next_q = model(carry.z_H, carry.z_L, x.detach())
    next_halt, next_continue = next_q[:, 0], next_q[:, 1]
    is_last = carry.steps >= cfg.halt_max_steps
    return torch.sigmoid(torch.where(is_last, next_halt, torch.maximum(next_halt, next_continue)))


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up from 0, then constant."""
    return config.lr * min(1.0, step / max(1, config.lr_warmup_steps))


def example_stream(n: int, rng: np.random.Generator) -> Iterator[int]:
    """Training example indices, epoch after epoch, each epoch in a fresh random order."""
    while True:
        yield from rng.permutation(n).tolist()


# --------------------------------------------------------------------------- training loop


def train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    steps: int | None = None,
    minutes: float | None = None,
    checkpoint_every: float,
    threads: int = 1,
    log_every: int = 50,
) -> list[Path]:
    """Train on the dataset's train split and write a reference-format run directory
    (local); return the checkpoint files.

    The budget is `steps` or `minutes` (exactly one); `checkpoint_every` is in the same unit,
    and the last step is always saved. Weights at a given step depend only on the config, the
    data and `threads` (float reduction order), so a time budget only decides where the same
    trajectory stops. If `out_dir` already holds a finished run of this exact config, data
    path and budget, its checkpoints are returned without training.
    """
    if (steps is None) == (minutes is None):
        raise ValueError("give exactly one of steps= or minutes=")
    out_dir = Path(out_dir)
    budget = {"steps": steps} if steps is not None else {"minutes": minutes}
    doc = all_config(config, dataset.uri, {**budget, "checkpoint_every": checkpoint_every})
    if (finished := finished_checkpoints(out_dir, doc)) is not None:
        log.info("%s: reusing %d checkpoints of a finished run with the same config", out_dir, len(finished))
        return finished
    check_sizes(config, dataset)
    data = read_examples(dataset, "train")
    prepare_run_dir(out_dir, doc)
    with torch_threads(threads):
        return train_loop(config, data, out_dir, steps=steps, minutes=minutes,
                          checkpoint_every=checkpoint_every, log_every=log_every)


def train_loop(
    config: TrainConfig, data: Examples, out_dir: Path, *, steps: int | None, minutes: float | None,
    checkpoint_every: float, log_every: int,
) -> list[Path]:
    """Build the model, then train step by step until the budget is spent, logging every
    `log_every` steps and saving a checkpoint whenever progress passes a multiple of
    `checkpoint_every` (and at the end)."""
    spec = read_arch_spec(out_dir / CONFIG_FILE)  # what save_checkpoint needs, read as hrm-eval reads it
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = build_model(config.model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                  weight_decay=config.weight_decay)
    rng = torch.Generator().manual_seed(config.seed)  # exploration draws
    order = example_stream(len(data), np.random.default_rng(config.seed))
    carry = empty_carry(model, config.global_batch_size)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_rate)) if config.ema else None

    start = time.monotonic()
    saved: list[Path] = []
    window = Window()
    step, progress = 0, 0.0  # progress is in the budget's unit: steps or minutes
    while True:
        step += 1
        refill(carry, model, data, np.fromiter(order, int, count=int(carry.halted.sum())))
        window.add(train_step(model, optimizer, carry, config, learning_rate(config, step), data.ignore_label_id, rng))
        if averaged is not None:
            averaged.update_parameters(model)

        previous, progress = progress, step if steps is not None else (time.monotonic() - start) / 60
        done = progress >= (steps if steps is not None else minutes)
        if step % log_every == 0 or done:
            write_progress(out_dir, step, time.monotonic() - start, window.summary())
            window = Window()
        if done or crossed(progress, previous, checkpoint_every):
            saved.append(save_checkpoint(model if averaged is None else averaged.module, out_dir, step, spec))
        if done:
            break

    summary = {"checkpoints": [p.name for p in saved], "steps": step, "elapsed_s": round(time.monotonic() - start, 3)}
    storage.write_json_atomic(str(out_dir / SUMMARY_FILE), summary, indent=2)
    return saved


def train_step(
    model: RecursiveReasoningModel, optimizer: torch.optim.Optimizer, carry: Carry, config: TrainConfig,
    lr: float, ignore_label_id: int | None, rng: torch.Generator,
) -> dict[str, float]:
    """One ACT step and one optimizer update; returns the step's statistics."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, stats = act_step(model, carry, config, ignore_label_id, rng)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), **stats}


def crossed(progress: float, previous: float, every: float) -> bool:
    """Did progress pass a multiple of `every` since `previous`?"""
    return math.floor(progress / every) > math.floor(previous / every)


class Window:
    """Training statistics summed between two log lines."""

    def __init__(self):
        self.steps = 0
        self.sums: dict[str, float] = {}

    def add(self, stats: dict[str, float]) -> None:
        self.steps += 1
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def summary(self) -> dict[str, float]:
        """Losses per step; exact accuracy and ACT steps over the examples that halted."""
        halted = max(self.sums["halted"], 1)
        return {"loss": self.sums["loss"] / self.steps, "lm_loss": self.sums["lm_loss"] / self.steps,
                "train_exact": self.sums["halted_exact"] / halted, "mean_steps": self.sums["halted_steps"] / halted}


def write_progress(out_dir: Path, step: int, elapsed: float, summary: dict[str, float]) -> None:
    record = {"step": step, "elapsed_s": round(elapsed, 2), **{k: round(v, 5) for k, v in summary.items()}}
    with open(out_dir / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    log.info("step %5d  loss %.4f  lm %.4f  train exact %.3f  steps %.2f  %6.1fs", step, summary["loss"],
             summary["lm_loss"], summary["train_exact"], summary["mean_steps"], elapsed)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with `threads` intra-op threads (on a small shared box, 1 is fastest)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_sizes(config: TrainConfig, dataset: Dataset) -> None:
    """The model fits the dataset (the reference takes these sizes from the data)."""
    meta, cfg = dataset.metadata("train"), config.model
    for name in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
        if getattr(meta, name) != getattr(cfg, name):
            raise InputError(f"{dataset.uri}: train split has {name}={getattr(meta, name)} but the model "
                             f"config says {getattr(cfg, name)}")


def read_examples(dataset: Dataset, split: str) -> Examples:
    """Every set of one split, concatenated."""
    parts = [dataset.read_set(split, name) for name in dataset.sets(split)]
    return Examples(
        inputs=np.concatenate([p.inputs for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        puzzle_identifiers=np.concatenate([np.repeat(p.puzzle_identifiers, np.diff(p.puzzle_indices))
                                           for p in parts]),
        ignore_label_id=dataset.metadata(split).ignore_label_id,
    )


# --------------------------------------------------------------------------- run directory


def all_config(config: TrainConfig, data_path: str, budget: dict[str, float | None]) -> dict[str, Any]:
    """The reference's training config dump: `arch:` (name, loss, model fields) and top-level
    training keys; `budget` (ours: steps or minutes, checkpoint_every) makes a run reusable."""
    cfg = config.model
    arch: dict[str, Any] = {"name": ARCH_NAMES[cfg.family], "loss": {"name": LOSS_HEAD, "loss_type": config.loss_type}}
    for key, value in cfg.model_dump().items():
        if key in NOT_ARCH_FIELDS or (cfg.family == "hrm" and key in TRM_ONLY_FIELDS):
            continue
        arch[key] = value
    data_key = {"data_path": data_path} if cfg.family == "hrm" else {"data_paths": [data_path]}
    training = config.model_dump(exclude={"model", "loss_type"})
    return {"arch": arch, **data_key, **training, "lr_min_ratio": 1.0, "optimizer": "AdamW", "budget": budget}


def finished_checkpoints(out_dir: Path, doc: dict[str, Any]) -> list[Path] | None:
    """The checkpoints of a finished run of exactly this config in `out_dir`, if there is one."""
    config_file, summary_file = out_dir / CONFIG_FILE, out_dir / SUMMARY_FILE
    if not (config_file.is_file() and summary_file.is_file()):
        return None
    if load_yaml(config_file.read_bytes(), str(config_file)) != doc:
        return None
    paths = [out_dir / name for name in json.loads(summary_file.read_text())["checkpoints"]]
    return paths if all(p.is_file() for p in paths) else None


def prepare_run_dir(out_dir: Path, doc: dict[str, Any]) -> None:
    """Start a fresh run in `out_dir`. An unfinished (or damaged) run of the same config is
    overwritten; a different run there is refused rather than clobbered."""
    config_file = out_dir / CONFIG_FILE
    steps = [out_dir / name for name in step_files(str(out_dir))] if out_dir.is_dir() else []
    if config_file.exists() or steps:
        if not (config_file.is_file() and load_yaml(config_file.read_bytes(), str(config_file)) == doc):
            raise InputError(f"{out_dir}: holds another training run ({CONFIG_FILE} differs or is missing); "
                             f"use a new directory or delete it")
        for path in steps:
            path.unlink()
        for name in (LOG_FILE, SUMMARY_FILE):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage.write_bytes_atomic(str(config_file), yaml.safe_dump(doc, sort_keys=True).encode())
