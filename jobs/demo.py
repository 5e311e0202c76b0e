"""`hrm-eval demo`: the whole tool on one CPU box, from nothing.

1. a 4×4 Sudoku dataset (held-out solution grids in the test split) in our Parquet layout;
2. a tiny HRM trained on it for a few minutes, checkpoints written in the reference format;
3. `configs/quickstart.yaml`: every checkpoint, a top-3 ensemble and test-time augmentation,
   evaluated on an embedded local Ray;
4. the report.

Everything lands under --workdir and is reused by the next run: the data and the trained
checkpoints are kept, and the evaluation resumes its run id, so a second run skips to the
report.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from hrm.puzzles.sudoku_generator import write_demo_sudoku
from hrm.train import DEMO_MODELS, TrainConfig, train

from jobs.run import run_config_file

log = logging.getLogger(__name__)
QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0] + (
        " Makes a 4×4 Sudoku dataset, trains tiny HRM checkpoints (CPU, a few minutes), evaluates "
        "them all plus an ensemble and test-time augmentation on an embedded local Ray, and writes "
        "the report. A second run reuses what the first built."
    )
    parser.add_argument("--workdir", type=Path, default=Path("demo-work"),
                        help="where data, checkpoints and results go (default: ./demo-work)")
    # A step budget, not a time budget: the same checkpoints on every machine (about 4 minutes
    # on 2 idle cores; a busy machine takes longer instead of stopping at a worse model).
    parser.add_argument("--steps", type=int, default=1800, help="training steps (default: 1800)")
    parser.add_argument("--checkpoints", type=int, default=8, help="checkpoints to write (default: 8)")
    parser.add_argument("--config", default=str(QUICKSTART), help="run config (default: configs/quickstart.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run config value (repeatable)")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    workdir = args.workdir
    log.info("[1/3] dataset: %s", workdir / "data")
    dataset = write_demo_sudoku(str(workdir / "data"))

    log.info("[2/3] training a tiny HRM for %d steps: %s", args.steps, workdir / "hrm")
    checkpoints = train(TrainConfig(model=DEMO_MODELS["hrm"]), dataset, workdir / "hrm", steps=args.steps,
                        checkpoint_every=args.steps / args.checkpoints, threads=1)
    log.info("%d checkpoints: %s", len(checkpoints), ", ".join(p.name for p in checkpoints))

    log.info("[3/3] evaluating every checkpoint, a top-3 ensemble and test-time augmentation on embedded Ray")
    paths = [f"checkpoints.0.run={workdir / 'hrm'}", f"dataset.uri={workdir / 'data'}",
             f"output.uri={workdir / 'results'}"]
    status = run_config_file(args.config, paths + args.overrides)
    if status == 0:
        log.info("demo done in %.0f s", time.monotonic() - started)
    return status
