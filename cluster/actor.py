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
import resource
import socket
import time
import uuid
from collections import OrderedDict

import ray
import torch

from hrm.checkpoint import build_checked_model, load_checkpoint
from hrm.dataset import open_dataset
from hrm.engine import Engine
from hrm.metrics import StatsTable
from hrm.predictions import prediction_table

from cluster.config import EvalConfig
from cluster.plan import CheckpointRef, Unit, local_files
from cluster.results import ActorInfo, UnitRecord, prediction_key, write_predictions


class Evaluator:
    def __init__(
        self,
        *,
        dataset_uri: str,
        split: str,
        run: str,
        eval_config: EvalConfig,
        device: str,
        cache_size: int,
        torch_threads: int,
        checkpoint_cache_dir: str | None,
    ):
        # Ray sets OMP_NUM_THREADS from the actor's whole-CPU count (at least 1), which is not
        # what a fractional-CPU actor should use: set the thread count explicitly.
        torch.set_num_threads(torch_threads)
        self.dataset = open_dataset(dataset_uri)
        self.metadata = self.dataset.metadata(split)
        self.dataset_uri = dataset_uri
        self.run = run
        self.eval = eval_config
        self.device = device
        self.cache_size = cache_size
        self.checkpoint_cache_dir = checkpoint_cache_dir
        self.engines: OrderedDict[str, Engine] = OrderedDict()  # checkpoint name -> engine, LRU first
        # A restarted actor is a new instance with an empty cache; the driver tells by this id.
        self.instance = uuid.uuid4().hex[:12]

    def __call__(self, unit: Unit, checkpoint: CheckpointRef) -> UnitRecord:
        started = time.perf_counter()
        engine, loaded = self._engine(checkpoint)
        loaded_at = time.perf_counter()
        shard = unit.shard
        batch = self.dataset.examples(shard.split, shard.set, shard.start, shard.stop)
        read_at = time.perf_counter()
        transform = unit.tta.transform() if unit.tta is not None else None
        inputs, labels = (batch.inputs, batch.labels) if transform is None else (
            transform.apply(batch.inputs), transform.apply(batch.labels))
        result = engine.run(
            inputs, labels, batch.puzzle_identifiers,
            protocol=self.eval.protocol, steps=self.eval.steps, min_steps=self.eval.min_steps,
        )
        if transform is not None:
            # Stored in the original frame: votes then compare copies position by position. The
            # scores need no change (the transform is a bijection of positions and of labels).
            result.pred = transform.invert(result.pred)
        evaluated_at = time.perf_counter()
        stats = StatsTable().update(set=shard.set, tier=batch.columns.get("tier"), **result.per_example())
        table = prediction_table(
            result, set_name=shard.set, example_id=batch.example_id, puzzle_index=batch.puzzle_index,
            puzzle_identifier=batch.puzzle_identifiers, columns=batch.columns,
        )
        key = prediction_key(checkpoint.name, shard, unit.tta.index if unit.tta is not None else 0)
        write_predictions(self.run, key, table)
        written_at = time.perf_counter()
        return UnitRecord(
            unit_id=unit.id,
            checkpoint=checkpoint.name,
            shard=shard,
            examples=len(result),
            forward_steps=result.forward_steps,
            stats=stats.to_dict(),
            predictions=key,
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
        in_ray = ray.is_initialized()  # the class also runs in-process (tests, the engine comparison)
        context = ray.get_runtime_context() if in_ray else None
        return ActorInfo(
            actor_id=context.get_actor_id() if in_ray else "local",
            instance=self.instance,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            node_id=context.get_node_id() if in_ray else "local",
            device=self.device,
            gpu=torch.cuda.get_device_name() if cuda else None,
            torch_threads=torch.get_num_threads(),
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
            peak_gpu_bytes=torch.cuda.max_memory_allocated() if cuda else None,
            cached=list(self.engines),
        )

    def _engine(self, checkpoint: CheckpointRef) -> tuple[Engine, bool]:
        if checkpoint.name in self.engines:
            self.engines.move_to_end(checkpoint.name)
            return self.engines[checkpoint.name], False
        while len(self.engines) >= self.cache_size:
            self.engines.popitem(last=False)
            self._release_memory()
        weights, arch_config = local_files(checkpoint, self.checkpoint_cache_dir)
        ckpt = load_checkpoint(weights, arch_config)
        meta = self.metadata
        model = build_checked_model(
            ckpt, meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers,
            dataset=self.dataset_uri, forward_dtype=self.eval.dtype,
        )
        engine = Engine(model, ckpt.spec.loss_type, ignore_label_id=meta.ignore_label_id,
                        device=self.device, batch_size=self.eval.batch_size, compile=self.eval.compile)
        self.engines[checkpoint.name] = engine
        return engine, True

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
