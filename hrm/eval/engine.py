"""Batched ACT inference: run a model over (inputs, labels, puzzle identifiers).

Two protocols:
- `fixed` — the reference evaluator's: every example runs exactly `steps` ACT steps
  (halt_max_steps by default) and the prediction is the argmax of the last step's logits.
  Because every example runs every step, the exact flag after each step comes for free:
  accuracy-vs-steps curves from one pass.
- `adaptive` — ACT as trained: an example halts once q_halt > q_continue (q_halt > 0 for TRM
  trained without the continue head) within [min_steps, max_steps]. Halted slots are refilled
  with the next example at once (continuous batching) so the batch stays full.

The result is one row per example (numpy), the per-example quantities the metrics and the
prediction files need.

On CPU, `streams` > 1 splits the work between that many worker threads, each running
batches of batch_size / streams with single-threaded kernels, instead of splitting every op
between threads: no thread waits for another at every op, which matters most where the cores
are shared with other processes. Examples are independent, so the results are those of any
other batching: equal up to float rounding (in the fixed protocol, equal to batch_size /
streams on one stream).

`compile=True` hands each reasoning module to torch.compile, which fuses the elementwise work
between the matmuls (norms, RoPE, SiLU, residual adds) into generated kernels. The first batch
pays the compilation (seconds on CPU, where it needs a C++ compiler); the results equal the
eager ones up to float rounding. It combines with streams: the generated CPU kernels ask for
their thread count when they run (inductor's `cpp.dynamic_threads`) instead of fixing the
count they were generated under, so each stream's kernels stay on that stream's threads.
`compile_mode` picks torch.compile's mode for it: None (torch's default), "reduce-overhead"
(CUDA graphs: a batch's kernels are launched as one graph, for batches too small to keep the
GPU busy between launches; CUDA only) or "max-autotune" (inductor times several kernels per
matmul and keeps the fastest: a longer compilation). Which pays is for `python -m jobs.bench gpu`
to measure, so the default stays torch's.

On CUDA, each batch's token ids go up from pinned host memory by non-blocking copies, and its
results come back by non-blocking copies followed by one wait, instead of a wait per field.
Activations stay in the checkpoint's dtype (bfloat16 or float32) without torch.autocast: the
weights are cast to it once (`cast_weights_`), RMSNorm and RoPE compute in float32 as the
reference does, and the q logits and losses are float32 or wider.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from hrm.model.losses import LossType, token_losses
from hrm.model.models import ReasoningModule, RecursiveReasoningModel

Protocol = Literal["fixed", "adaptive"]
CompileMode = Literal["reduce-overhead", "max-autotune"]  # None: torch.compile's default mode
Part = TypeVar("Part")
Output = TypeVar("Output")


class EngineSettingError(ValueError):
    """A setting the engine cannot run with; `setting` names it, so that a command line can
    name its own flag for it."""

    def __init__(self, setting: Literal["device", "streams", "compile", "compile_mode"], message: str):
        super().__init__(message)
        self.setting = setting


@dataclass
class EngineResult:
    """Per-example outputs, aligned with the input rows."""

    pred: np.ndarray  # [N, seq_len] int32 argmax tokens at the halting step
    q_halt_logit: np.ndarray  # [N] float32, at the halting step
    q_continue_logit: np.ndarray  # [N] float32
    steps: np.ndarray  # [N] int32 halting step (1-based)
    valid_tokens: np.ndarray  # [N] int32 labels that count
    correct_tokens: np.ndarray  # [N] int32
    exact: np.ndarray  # [N] bool: every valid token correct
    lm_loss: np.ndarray  # [N] float64 mean token loss under the checkpoint's loss type
    exact_per_step: np.ndarray | None  # [N, steps] bool, fixed protocol only
    forward_steps: int = 0  # example-steps the model computed (padding slots excluded)
    batch_forwards: int = 0  # model calls

    def __len__(self) -> int:
        return len(self.steps)

    def per_example(self) -> dict[str, np.ndarray | None]:
        """The per-example arrays only (what metrics and prediction tables take)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type != "int"}

    @staticmethod
    def concat(parts: list["EngineResult"]) -> "EngineResult":
        arrays = {}
        for f in fields(EngineResult):
            values = [getattr(p, f.name) for p in parts]
            if f.type == "int":
                arrays[f.name] = sum(values)
            elif values[0] is None:
                arrays[f.name] = None
            else:
                arrays[f.name] = np.concatenate(values)
        return EngineResult(**arrays)


class Engine:
    """Holds one model on one device; `run` evaluates any number of examples in batches.

    On CPU, constructing one tunes glibc's allocator for the whole process (see
    `keep_freed_memory`)."""

    def __init__(
        self,
        model: RecursiveReasoningModel,
        loss_type: LossType,
        *,
        ignore_label_id: int | None,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        streams: int = 1,
        compile: bool = False,
        compile_mode: CompileMode | None = None,
    ):
        """`batch_size` examples are in flight at once, `batch_size / streams` per stream."""
        self.device = torch.device(device)
        if streams < 1 or (streams > 1 and self.device.type != "cpu"):
            raise EngineSettingError("streams", f"streams must be 1, or more on CPU; got {streams} on {self.device}")
        if compile and self.device.type == "cpu" and not cpu_compiler():
            raise EngineSettingError("compile", "compile on CPU needs a C++ compiler: g++ on PATH, or $CXX")
        check_compile_mode(compile, compile_mode, self.device)
        check_device(self.device)  # last: the settings above are wrong on any machine, this on this one
        if self.device.type == "cpu":
            keep_freed_memory()
        self.model = model.to(self.device).eval()
        cast_weights_(self.model, self.model.config.dtype)
        if compile:
            for module in self.model.modules():
                if isinstance(module, ReasoningModule):  # where the time goes; the heads stay eager
                    module.compile(**compile_settings(compile_mode, self.device))
        self.config = model.config
        self.loss_type = loss_type
        self.ignore_label_id = ignore_label_id
        self.streams = streams
        self.stream_batch_size = math.ceil(batch_size / streams)

    # -- public ---------------------------------------------------------------------------
    def run(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        puzzle_identifiers: np.ndarray,
        *,
        protocol: Protocol = "fixed",
        steps: int | None = None,
        min_steps: int = 1,
    ) -> EngineResult:
        """`steps`: the fixed step count, or the adaptive maximum (default halt_max_steps)."""
        steps = steps or self.config.halt_max_steps
        if protocol == "fixed":
            size = self.stream_batch_size
            batches = [slice(start, start + size) for start in range(0, len(inputs), size)]
            run_batch = lambda rows: self._fixed_batch(*self._to_device(inputs[rows], labels[rows],
                                                                        puzzle_identifiers[rows]), steps)
            return EngineResult.concat(self.in_streams(run_batch, batches))
        if protocol == "adaptive":
            # each stream runs its own continuous batching over every streams-th example
            shares = [np.arange(i, len(inputs), self.streams) for i in range(self.streams)]
            run_share = lambda rows: self._adaptive(inputs[rows], labels[rows], puzzle_identifiers[rows],
                                                    min_steps, steps)
            merged = EngineResult.concat(self.in_streams(run_share, [rows for rows in shares if len(rows)]))
            return take_rows(merged, np.argsort(np.concatenate(shares), kind="stable"))
        raise ValueError(f"unknown protocol {protocol!r}")

    # -- streams --------------------------------------------------------------------------
    def in_streams(self, work: Callable[[Part], Output], parts: Sequence[Part]) -> list[Output]:
        """`work` over `parts` under inference mode, in order; with streams > 1 on that many
        worker threads, each handed the next part as it finishes one. Public so that a benchmark
        can time other work (the model's bare matmuls) laid out exactly as the engine runs."""
        def in_inference_mode(part: Part) -> Output:
            with torch.inference_mode():  # thread-local, so each worker enters it itself
                return work(part)

        if self.streams == 1 or len(parts) == 1:
            return [in_inference_mode(part) for part in parts]
        with self._kernel_threads_per_stream(), ThreadPoolExecutor(self.streams) as pool:
            return list(pool.map(in_inference_mode, parts))

    @contextmanager
    def _kernel_threads_per_stream(self) -> Iterator[None]:
        """Share torch's intra-op threads (a process-wide setting) between the streams."""
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, before // self.streams))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # -- fixed protocol -------------------------------------------------------------------

    def _to_device(self, inputs, labels, identifiers):
        """int64 tensors on the engine's device. To a GPU they go from pinned (page-locked)
        host memory without waiting, so the copy overlaps the work already queued."""
        host = [torch.from_numpy(np.ascontiguousarray(a).astype(np.int64)) for a in (inputs, labels, identifiers)]
        if self.device.type != "cuda":
            return tuple(host)
        return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in host)

    def _valid(self, labels: torch.Tensor) -> torch.Tensor:
        if self.ignore_label_id is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return labels != self.ignore_label_id

    def _fixed_batch(self, inputs, labels, identifiers, steps: int) -> EngineResult:
        model = self.model
        x = model.embed(inputs, identifiers)
        z_H, z_L = model.initial_state(len(inputs), self.device)
        valid = self._valid(labels)
        exact_per_step = []
        for _ in range(steps):
            z_H, z_L, logits, q = model(z_H, z_L, x)
            exact_per_step.append(_exact(logits.argmax(-1), labels, valid))
        result, more = self._score(logits, q, labels, valid, torch.full((len(inputs),), steps),
                                   exact_per_step=torch.stack(exact_per_step, dim=1))
        result.exact_per_step = more["exact_per_step"]
        result.forward_steps = steps * len(inputs)
        result.batch_forwards = steps
        return result

    def _score(self, logits, q, labels, valid, steps,
               **more: torch.Tensor) -> tuple[EngineResult, dict[str, np.ndarray]]:
        """The per-example result of these rows, and `more` tensors brought to the host with it
        (one wait for all of them)."""
        pred = logits.argmax(-1)
        valid_count = valid.sum(-1)
        correct = (valid & (pred == labels)).sum(-1)
        loss = token_losses(logits, labels, valid, self.loss_type).sum(-1) / valid_count.clamp_min(1)
        host = to_host(pred=pred, q=q, steps=steps, valid=valid_count, correct=correct, loss=loss, **more)
        result = EngineResult(
            pred=host["pred"].astype(np.int32),
            q_halt_logit=host["q"][:, 0].astype(np.float32),
            q_continue_logit=host["q"][:, 1].astype(np.float32),
            steps=host["steps"].astype(np.int32),
            valid_tokens=host["valid"].astype(np.int32),
            correct_tokens=host["correct"].astype(np.int32),
            exact=host["correct"] == host["valid"],
            lm_loss=host["loss"].astype(np.float64),
            exact_per_step=None,
        )
        return result, {name: host[name] for name in more}

    # -- adaptive protocol ----------------------------------------------------------------
    def _adaptive(self, inputs, labels, identifiers, min_steps: int, max_steps: int) -> EngineResult:
        """Continuous batching: each slot holds one example; a slot whose example halts is
        refilled from the queue before the next step, so every model call is a full batch
        until the queue runs dry."""
        model, n = self.model, len(inputs)
        slots = Slots(self, min(self.stream_batch_size, n))
        results: list[EngineResult] = []
        order: list[np.ndarray] = []
        next_example = 0
        forward_steps = batch_forwards = 0
        while True:
            occupied = to_host(occupied=slots.occupied)["occupied"].copy()  # one wait: which slots are free, which busy
            free = np.flatnonzero(~occupied)
            if len(free) and next_example < n:
                take = np.arange(next_example, min(n, next_example + len(free)))
                slots.fill(free[: len(take)], take, *self._to_device(inputs[take], labels[take], identifiers[take]))
                occupied[free[: len(take)]] = True
                next_example += len(take)
            active = int(occupied.sum())
            if not active:
                break
            slots.compact_if_sparse(active)
            z_H, z_L, logits, q = model(slots.z_H, slots.z_L, slots.x)
            slots.z_H, slots.z_L = z_H, z_L
            slots.steps += slots.occupied
            forward_steps += int(slots.occupied.sum())
            batch_forwards += 1
            halted = slots.occupied & (slots.steps >= max_steps)
            can_halt = slots.occupied & (slots.steps >= min_steps)
            wants_halt = q[:, 0] > 0 if self.config.no_ACT_continue and self.config.family == "trm" else q[:, 0] > q[:, 1]
            halted |= can_halt & wants_halt
            rows = halted.nonzero().squeeze(-1)  # waits for the step
            if len(rows):
                labels_h = slots.labels[rows]
                result, more = self._score(logits[rows], q[rows], labels_h, self._valid(labels_h), slots.steps[rows],
                                           example=slots.example[rows])
                results.append(result)
                order.append(more["example"])
                slots.release(rows)
        merged = take_rows(EngineResult.concat(results), np.argsort(np.concatenate(order), kind="stable"))
        merged.forward_steps, merged.batch_forwards = forward_steps, batch_forwards
        return merged


class Slots:
    """The adaptive protocol's batch: per-slot latent state, inputs and bookkeeping."""

    def __init__(self, engine: Engine, size: int):
        model, device = engine.model, engine.device
        cfg = model.config
        self.z_H, self.z_L = model.initial_state(size, device)
        self.x = torch.zeros(size, cfg.seq_len + cfg.prefix_len, cfg.hidden_size, dtype=cfg.dtype, device=device)
        self.labels = torch.zeros(size, cfg.seq_len, dtype=torch.int64, device=device)
        self.example = torch.full((size,), -1, dtype=torch.int64, device=device)
        self.steps = torch.zeros(size, dtype=torch.int64, device=device)
        self.occupied = torch.zeros(size, dtype=torch.bool, device=device)
        self.model = model

    def fill(self, rows: np.ndarray, examples: np.ndarray, inputs, labels, identifiers) -> None:
        rows_t = torch.from_numpy(rows).to(self.occupied.device)
        h0, l0 = self.model.initial_state(len(rows), self.occupied.device)
        self.z_H[rows_t], self.z_L[rows_t] = h0, l0
        self.x[rows_t] = self.model.embed(inputs, identifiers)
        self.labels[rows_t] = labels
        self.example[rows_t] = torch.from_numpy(examples).to(self.example.device)
        self.steps[rows_t] = 0
        self.occupied[rows_t] = True

    def release(self, rows: torch.Tensor) -> None:
        self.occupied[rows] = False
        self.example[rows] = -1

    def compact_if_sparse(self, active: int) -> None:
        """Once the queue is empty, shrink the batch to the live slots so drained slots
        stop costing compute."""
        if active == len(self.occupied) or active > len(self.occupied) // 2:
            return
        keep = self.occupied.nonzero().squeeze(-1)
        for name in ("z_H", "z_L", "x", "labels", "example", "steps", "occupied"):
            setattr(self, name, getattr(self, name)[keep])


def take_rows(result: EngineResult, rows: np.ndarray) -> EngineResult:
    """The per-example arrays of `result` reordered (or selected) by `rows`, in place."""
    for f in fields(EngineResult):
        value = getattr(result, f.name)
        if isinstance(value, np.ndarray):
            setattr(result, f.name, value[rows])
    return result


def _exact(pred: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return ((pred == labels) | ~valid).all(-1)


def to_host(**tensors: torch.Tensor) -> dict[str, np.ndarray]:
    """The tensors as numpy arrays. From a GPU every copy is queued without waiting (into pinned
    memory) and the stream is waited for once, instead of once per tensor."""
    host = {name: t.to("cpu", non_blocking=True) for name, t in tensors.items()}
    for device in {t.device for t in tensors.values() if t.device.type == "cuda"}:
        torch.cuda.current_stream(device).synchronize()
    return {name: t.numpy() for name, t in host.items()}


def check_device(device: torch.device) -> None:
    """Refuse a CUDA device on a machine where torch sees none, naming the torch build: torch
    would fail deep inside the first copy, with an assertion about how it was compiled."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineSettingError("device", f"cuda, but torch sees no CUDA device on this machine "
                                           f"({cuda_build()}); use cpu")


def cuda_build() -> str:
    """Which torch this is and which CUDA it was built for, for messages about CUDA."""
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
    return f"torch {torch.__version__}, {built}"


def check_compile_mode(compile: bool, mode: CompileMode | None, device: torch.device) -> None:
    if mode is None:
        return
    if not compile:
        raise EngineSettingError("compile_mode", f"compile_mode {mode!r} is a mode of compile, which is off")
    if mode == "reduce-overhead" and device.type != "cuda":
        raise EngineSettingError("compile_mode", f"compile_mode 'reduce-overhead' runs CUDA graphs: CUDA only, "
                                                 f"not {device}")


def compile_settings(mode: CompileMode | None, device: torch.device) -> dict[str, Any]:
    """torch.compile's keyword arguments for `mode` on `device`. On CPU the generated kernels
    must take their thread count when they run (see the module docstring), an inductor option;
    torch.compile takes a mode or options but not both, so there the mode goes in as the
    options it stands for."""
    if device.type != "cpu":
        return {"mode": mode}
    from torch._inductor import list_mode_options  # the compiler: imported only by a compiling engine

    return {"options": {**list_mode_options(mode or "default"), "cpp.dynamic_threads": True}}


def cpu_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call (its default: $CXX, else g++)."""
    return shutil.which(os.environ.get("CXX") or "g++")


def keep_freed_memory() -> None:
    """Have glibc keep freed blocks (up to 32 MiB each) for reuse instead of handing them
    back to the kernel.

    On CPU every op allocates its output afresh. By default glibc returns large freed blocks
    to the kernel (munmap, heap trimming), so the next op page-faults and zero-fills the same
    memory again: 10-20% of the CPU time of these models. The price is that the process keeps
    its peak activation memory. This is process-wide; without glibc's mallopt it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # absent from non-glibc C libraries
    if mallopt is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum
    mallopt(m_trim_threshold, (1 << 31) - 1)


def cast_weights_(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store weights in the activation dtype once instead of casting them at every use.
    The result is identical (the reference casts at use too); RoPE tables stay float32 as
    in the reference."""
    for param in model.parameters():
        param.data = param.data.to(dtype)
    for module in model.modules():
        if hasattr(module, "weights") and isinstance(module.weights, torch.Tensor):
            module.weights = module.weights.to(dtype)
