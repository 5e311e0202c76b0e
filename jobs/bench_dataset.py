"""Measure dataset I/O by hand (not part of the test suite): convert N random Sudoku-shaped
examples (seq 81, vocab 11) from the reference layout to Parquet on local disk and on a
loopback S3 server, then stream each back, reporting wall time and peak RSS.

    .venv/bin/python tests/measure_dataset_io.py [--examples 100000] [--dtype uint8|int64]

Every conversion and read-back runs in its own process under /usr/bin/time -v, so each peak
RSS belongs to that step alone. Random tokens are enough here: this measures I/O, not puzzles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm import storage  # noqa: E402
from hrm.data.reader import open_dataset  # noqa: E402
from hrm.data.schema import DatasetMetadata, PuzzleArrays  # noqa: E402
from hrm.data.writer import write_dataset  # noqa: E402
from hrm.memory import peak_rss_bytes  # noqa: E402

BATCH = 4096


def generate(root: Path, examples: int, dtype: str) -> int:
    """A reference-layout Sudoku-shaped set: one example per puzzle, one puzzle per group."""
    rng = np.random.default_rng(0)
    arrays = PuzzleArrays(
        inputs=rng.integers(1, 11, size=(examples, 81)).astype(dtype),
        labels=rng.integers(2, 11, size=(examples, 81)).astype(dtype),
        puzzle_identifiers=np.zeros(examples, np.int32),
        puzzle_indices=np.arange(examples + 1, dtype=np.int32),
        group_indices=np.arange(examples + 1, dtype=np.int32))
    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
                           num_puzzle_identifiers=1, total_groups=examples, mean_puzzle_examples=1.0,
                           sets=["all"])
    write_dataset(root, {"test": {"all": arrays}}, {"test": meta}, ["<blank>"], format="reference")
    return arrays.inputs.nbytes + arrays.labels.nbytes


def timed(command: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """stdout, wall seconds and peak RSS in MiB of one process run under /usr/bin/time -v."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    hours, minutes, seconds = int(wall.group(1) or 0), int(wall.group(2)), float(wall.group(3))
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return done.stdout, hours * 3600 + minutes * 60 + seconds, rss_kib // 1024


def peak_anonymous_rss(work) -> tuple[object, int]:
    """Run `work()` while sampling RssAnon (memory not backed by a file) every 5 ms; returns its
    result and the peak in MiB. Peak RSS alone also counts the pages of memory-mapped files
    (the reference .npy source, the scratch spool), which are page cache the kernel can drop."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            status = Path("/proc/self/status").read_text()
            peak[0] = max(peak[0], int(re.search(r"RssAnon:\s+(\d+) kB", status).group(1)))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, peak[0] // 1024


def convert(source: str, target: str) -> None:
    """Child process: `hrm-eval convert reference SOURCE TARGET`, reporting peak anonymous RSS."""
    from jobs.cli import main as cli

    code, anonymous = peak_anonymous_rss(lambda: cli(["convert", "reference", source, target, "--json"]))
    assert code == 0
    print(json.dumps({"peak_anonymous_rss_mib": anonymous}))


def stream(uri: str) -> None:
    """Child process: read every example back in batches; print JSON with peak RSS once the first
    batch is read (libraries imported, thread pools up) and at the end."""
    started = time.perf_counter()
    dataset = open_dataset(uri)
    first = dataset.examples("test", "all", 0, min(BATCH, dataset.num_examples("test", "all")))
    baseline = peak_rss_bytes() // 2**20
    count, checksum = 0, 0
    for shard in dataset.shards("test"):
        for start in range(shard.start, shard.stop, BATCH):
            batch = dataset.examples("test", shard.set, start, min(shard.stop, start + BATCH))
            count += len(batch)
            checksum += int(batch.inputs.sum(dtype=np.int64))
    assert np.array_equal(first.inputs, dataset.examples("test", "all", 0, len(first)).inputs)
    print(json.dumps({"examples": count, "checksum": checksum, "seconds": round(time.perf_counter() - started, 2),
                      "baseline_rss_mib": baseline,
                      "peak_rss_mib": peak_rss_bytes() // 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--dtype", choices=("uint8", "int64"), default="uint8")
    parser.add_argument("--stream", metavar="URI", help=argparse.SUPPRESS)  # child processes
    parser.add_argument("--convert", nargs=2, metavar=("SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream:
        return stream(args.stream)
    if args.convert:
        return convert(*args.convert)

    import boto3

    from tests.s3server import S3_ENV, start_s3_server

    server, endpoint = start_s3_server()
    env = {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="measure")
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="measure-dataset-") as work:
        started = time.perf_counter()
        size = generate(Path(work) / "ref", args.examples, args.dtype)
        print(f"generated {args.examples} examples ({args.dtype}, inputs+labels {size / 2**20:.1f} MiB) "
              f"in {time.perf_counter() - started:.1f} s")
        print("| step | wall s | peak RSS MiB | notes |\n|---|---|---|---|")
        for name, target in (("local", str(Path(work) / "pq")), ("s3", "s3://measure/pq")):
            out, wall, rss = timed([python, __file__, "--convert", str(Path(work) / "ref"), target], env)
            summary, anonymous = (json.loads(line) for line in out.strip().splitlines())
            parts = [f for f in storage.list_files(target) if f.endswith(".parquet")]
            stored = sum(len(storage.read_bytes(storage.join(target, f))) for f in parts) / 2**20
            print(f"| convert reference -> parquet ({name}) | {wall:.2f} | {rss} | "
                  f"{summary['examples']} examples, {len(parts)} part(s), {stored:.1f} MiB Parquet; "
                  f"peak anonymous RSS {anonymous['peak_anonymous_rss_mib']} MiB |")
        for name, target in (("local", str(Path(work) / "pq")), ("s3", "s3://measure/pq")):
            out, wall, rss = timed([python, __file__, "--stream", target], env)
            result = json.loads(out)
            print(f"| stream back ({name}, batches of {BATCH}) | {wall:.2f} | {rss} | "
                  f"{result['examples']} examples; RSS {result['baseline_rss_mib']} MiB after the first batch, "
                  f"+{result['peak_rss_mib'] - result['baseline_rss_mib']} MiB while reading "
                  f"a {size / 2**20:.1f} MiB set |")
    server.stop()


if __name__ == "__main__":
    main()
