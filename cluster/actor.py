"""The evaluation actor: a callable class that evaluates work units.

One instance lives for the whole run (as a Ray actor, or in-process for tests). It opens
the dataset once and keeps the last `cache_size` built models (LRU), so consecutive units
of one checkpoint pay for loading it once. For each unit it reads its shard straight from
the dataset URI (arrays never travel through the driver), runs the engine, writes the
unit's predictions (Parquet, atomic) under the run, and returns a small `UnitRecord`:
exact metric statistics, counts, timings and the predictions' key.
"""

from __future__ import annotations

import gc
import os
import socket
import time
import uuid
from collections import OrderedDict

import ray
import torch

from hrm.checkpoint.loading import CheckpointChanged, load_planned_checkpoint
from hrm.data.reader import open_dataset
from hrm.errors import InputError
from hrm.eval.ablation import ABLATIONS, ablate_identifiers
from hrm.eval.engine import Engine
from hrm.eval.shard import build_engine, evaluate_examples
from hrm.memory import peak_rss_bytes
from hrm.puzzles.tokenizers import text_tokenizer

from cluster.config import RunConfig
from cluster.plan import CheckpointRef, Unit, read_examples
from cluster.results.layout import ActorInfo, UnitRecord, write_predictions


class CheckpointUnusable(Exception):
    """A unit's checkpoint could not be loaded as planned. `changed`: the file is no longer the
    one planned (the driver plans it again under its new version); `permanent`: its bytes are
    bad, so trying again cannot help (it fails that checkpoint's units, not the run); otherwise
    the fault was on the way (reading, downloading) and the unit is retried."""

    def __init__(self, checkpoint: str, message: str, permanent: bool, changed: bool = False):
        super().__init__(checkpoint, message, permanent, changed)  # all in args: Ray pickles it to the driver
        self.checkpoint, self.message, self.permanent, self.changed = checkpoint, message, permanent, changed

    def __str__(self) -> str:
        return self.message


class Evaluator:
    def __init__(self, config: RunConfig, run: str):
        # Ray sets OMP_NUM_THREADS from the actor's whole-CPU count (at least 1), which is not
        # what a fractional-CPU actor should use: set the thread count explicitly (docs/ray.md).
        torch.set_num_threads(config.cluster.actor_torch_threads)
        self.config, self.run = config, run
        self.eval, self.device = config.eval, config.device
        self.dataset = open_dataset(config.dataset.uri)
        self.metadata = self.dataset.metadata(config.dataset.split)
        self.tokenizer = text_tokenizer(self.dataset)  # text datasets: predictions stored decoded too
        # (checkpoint name, version) -> engine, LRU first: a checkpoint planned again under a new
        # version must not be served from the model built on its former bytes.
        self.engines: OrderedDict[tuple[str, str | None], Engine] = OrderedDict()
        # A restarted actor is a new instance with an empty cache; the driver tells by this id.
        self.instance = uuid.uuid4().hex[:12]

    def __call__(self, unit: Unit, checkpoint: CheckpointRef) -> UnitRecord:
        started = time.perf_counter()
        engine, loaded = self._engine(checkpoint)
        loaded_at = time.perf_counter()
        shard = unit.shard
        batch = read_examples(self.dataset, shard, unit.sample)
        read_at = time.perf_counter()
        identifiers = None
        if unit.ablation is not None:
            identifiers = ablate_identifiers(batch.puzzle_identifiers, ABLATIONS[unit.ablation],
                                             self.metadata.num_puzzle_identifiers, self.metadata.blank_identifier_id)
        done = evaluate_examples(engine, batch, protocol=self.eval.protocol, steps=self.eval.steps,
                                 min_steps=self.eval.min_steps,
                                 transform=unit.tta.transform() if unit.tta is not None else None,
                                 log_samples=self.config.output.log_samples, identifiers=identifiers,
                                 tokenizer=self.tokenizer)
        evaluated_at = time.perf_counter()
        write_predictions(self.run, unit.prediction_key, done.predictions)
        written_at = time.perf_counter()
        return UnitRecord(
            unit_id=unit.id,
            checkpoint=checkpoint.name,
            shard=shard,
            examples=len(done.result),
            forward_steps=done.result.forward_steps,
            stats=done.stats.to_dict(),
            predictions=unit.prediction_key,
            model_loaded=loaded,
            timings={
                "load_s": loaded_at - started,
                "read_s": read_at - loaded_at,
                "eval_s": evaluated_at - read_at,
                "write_s": written_at - evaluated_at,
            },
            actor=self.info(),
        )

    def info(self) -> ActorInfo:
        """Who and where this actor is; also the readiness probe the driver waits on."""
        cuda = self.device.startswith("cuda")
        # The class also runs in-process (tests, the engine comparison), where Ray may be up all the same.
        context = ray.get_runtime_context() if ray.is_initialized() else None
        in_ray = context is not None and context.get_actor_id() is not None
        return ActorInfo(
            actor_id=context.get_actor_id() if in_ray else "local",
            instance=self.instance,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            node_id=context.get_node_id() if in_ray else "local",
            device=self.device,
            gpu=torch.cuda.get_device_name() if cuda else None,
            torch_threads=torch.get_num_threads(),
            peak_rss_bytes=peak_rss_bytes(),
            peak_gpu_bytes=torch.cuda.max_memory_allocated() if cuda else None,
            cached=[name for name, _ in self.engines],
        )

    def _engine(self, checkpoint: CheckpointRef) -> tuple[Engine, bool]:
        key = (checkpoint.name, checkpoint.version)
        if key in self.engines:
            self.engines.move_to_end(key)
            return self.engines[key], False
        while len(self.engines) >= self.config.cluster.cache_size:
            self.engines.popitem(last=False)
            self._release_memory()
        try:
            ckpt = load_planned_checkpoint(checkpoint.uri, checkpoint.config_uri, checkpoint.version,
                                           self.config.cluster.checkpoint_cache_dir)
            engine = build_engine(ckpt, self.metadata, self.config.dataset.uri, dtype=self.eval.dtype,
                                  device=self.device, batch_size=self.eval.batch_size, compile=self.eval.compile,
                                  compile_mode=self.eval.compile_mode)
        except CheckpointChanged as err:
            raise CheckpointUnusable(checkpoint.name, str(err), permanent=True, changed=True) from None
        except InputError as err:
            raise CheckpointUnusable(checkpoint.name, str(err), permanent=True) from None
        except OSError as err:
            raise CheckpointUnusable(checkpoint.name, f"{checkpoint.uri}: {err}", permanent=False) from None
        self.engines[key] = engine
        return engine, True

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
