"""Running README.md's shell commands as written, in a copy of the checkout.

A README block runs with bash in a sandbox: a copy of the working tree (what `git clone`
plus your uncommitted edits would give, never `.venv` or `demo-work/`), `.venv` linked to the
test's virtualenv, a fresh HOME (so `~/.ray` starts empty, and nobody's is touched) and the
environment of a new shell (no activated venv, no RAY_ADDRESS or RAY_AUTH_MODE).

Blocks that start Ray (`ray start`, `hrm-eval run`) run in their own PID and network
namespaces where the machine allows them (`unshare`): `ray stop` stops every Ray process it
can see (docs/ray.md, "Stopping"), and the README's fixed ports (6379, 8265, Ray's other
defaults) would collide with other Ray clusters on a shared machine. Where no namespace can
be made, as on a CI box that runs one test at a time, they run as they are, followed by a
`ray stop --force`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.factories import REPO

VENV = Path(sys.prefix)
VENV_BIN = Path(sys.executable).parent

# Run inside the namespaces before the script: bring the loopback interface up (a new network
# namespace has it down), then exec the command. `ip` is not on every machine; the ioctl is.
# SIOCSIFFLAGS with IFF_UP | IFF_LOOPBACK | IFF_RUNNING on "lo" (struct ifreq is 40 bytes).
LOOPBACK_UP = (
    "import fcntl, os, socket, struct, sys; "
    "fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8914, struct.pack('16sH22x', b'lo', 0x49)); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)
# Ray takes the node's address from the host name when there is no route out; in a network
# namespace that must come out as loopback, else the namespace is of no use to Ray.
HOSTNAME_PROBE = (
    "import socket\n"
    "try:\n    print(socket.gethostbyname(socket.gethostname()))\n"
    "except OSError:\n    print('127.0.0.1')\n"
)
NAMESPACES = (["--pid", "--fork", "--kill-child", "--mount-proc", "--net"], ["--pid", "--fork", "--kill-child", "--mount-proc"])
AS_ROOT = ([], ["--user", "--map-root-user"])  # root already, or an unprivileged user namespace


def _runs(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@cache
def isolation() -> tuple[str, ...]:
    """The command line that runs a command in the strongest isolation this machine allows:
    PID and network namespaces, PID only, or none (empty)."""
    unshare = shutil.which("unshare")
    if unshare:
        for user in AS_ROOT:
            for flags in NAMESPACES:
                network = "--net" in flags
                prefix = (unshare, *user, *flags, "--", *((sys.executable, "-c", LOOPBACK_UP) if network else ()))
                address = _runs([*prefix, sys.executable, "-c", HOSTNAME_PROBE])
                if address is not None and (not network or address.strip().startswith("127.")):
                    return prefix
    return ()


def copy_checkout(dest: Path) -> Path:
    """The working tree's files that git would carry (tracked, and untracked but not ignored),
    with `.venv` a link to this test's virtualenv."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a deleted, not yet committed file is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(VENV)
    return dest


@dataclass(frozen=True)
class Sandbox:
    checkout: Path  # where the commands run
    env: dict[str, str]

    def run(self, script: str, timeout: float, *, isolate: bool = False, activated: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`bash -e -c script` in the checkout, stdout and stderr together; `activated`: after
        `source .venv/bin/activate`, as the README's commands after its first block assume.
        With `isolate` (for commands that start Ray), inside the namespaces where the machine
        allows them (all their processes end with the script, finished or killed at the
        timeout), else followed by `ray stop --force`, whatever happened."""
        prefix = list(isolation()) if isolate else []
        if activated:
            script = f"source .venv/bin/activate\n{script}"
        process = subprocess.Popen([*prefix, "bash", "-e", "-c", script], cwd=self.checkout,
                                   env={**self.env, **(env or {})}, text=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            output += f"\n[killed after {timeout:.0f} s]"
        finally:
            if isolate and not prefix:
                subprocess.run([str(VENV_BIN / "ray"), "stop", "--force"], env=self.env, capture_output=True,
                               timeout=60)
        return subprocess.CompletedProcess(process.args, process.returncode, output)


@contextmanager
def sandbox(root: Path) -> Iterator[Sandbox]:
    """A copy of the checkout under `root`, run in the environment of a fresh login shell on
    this machine: no venv activated, no Ray settings, a HOME of its own, and Ray's temporary
    files in a short directory of their own (Ray's socket paths have a length limit), removed
    afterwards."""
    checkout = copy_checkout(root / "checkout")
    (root / "home").mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="rdr-", dir="/tmp")
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "RAY_ADDRESS", "RAY_AUTH_MODE", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if Path(p) != VENV_BIN)
    env |= {"HOME": str(root / "home"), "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        yield Sandbox(checkout, env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def make_demo_work(workdir: Path) -> None:
    """What `./scripts/demo` leaves in demo-work/ that the README's commands read, made the way
    the demo makes it (`jobs.demo`) but small: a 4×4 Sudoku dataset in data/ and four tiny HRM
    checkpoints in hrm/, in seconds instead of minutes of training."""
    from hrm.puzzles.sudoku_generator import write_demo_sudoku
    from hrm.train import DEMO_MODELS, TrainConfig, train

    dataset = write_demo_sudoku(str(workdir / "data"), train_size=512, test_size=128)
    train(TrainConfig(model=DEMO_MODELS["hrm"]), dataset, workdir / "hrm", steps=8, checkpoint_every=2, threads=1)


# --------------------------------------------------------------------------- the README's inputs

MY_RUN_STEPS = tuple(8680 * k for k in range(1, 7))  # a run that saved every 8680 steps, up to the README's 26040 and 52080


def make_readme_inputs(checkout: Path) -> None:
    """Small stand-ins for every input the README's commands name, in its formats, at the
    paths it gives (relative to the checkout): a training run checkpoints/my-run with
    all_config.yaml and the two steps it names, a 9x9 Sudoku dataset in the reference layout
    at data/sudoku-extreme-full that those checkpoints fit, the converters' inputs
    (train.csv/test.csv, arc-data/, mazes-*.txt, tasks.jsonl), completions of the repo's text
    tasks (outputs.jsonl, tool-outputs.jsonl) and the demo's demo-work/."""
    from hrm.puzzles.maze import generate_mazes
    from hrm.puzzles.publish import Clock, Destination, publish
    from hrm.puzzles.sudoku_generator import generate_sudokus, sudoku_puzzle_arrays

    from tests.factories import make_checkpoint, write_sudoku_csv

    # Sudoku-Extreme's sizes: vocab 11, 81 cells, one puzzle identifier.
    make_checkpoint(checkout / "checkpoints" / "my-run", vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
                    steps=MY_RUN_STEPS)
    train, test = list(generate_sudokus(16, givens=30, seed=1)), list(generate_sudokus(8, givens=30, seed=2))
    splits = {"train": sudoku_puzzle_arrays(train), "test": sudoku_puzzle_arrays(test)}
    publish(Destination(str(checkout / "data" / "sudoku-extreme-full"), format="reference"), "sudoku-extreme stand-in",
            splits, seed=0, vocab_size=11, seq_len=81, identifiers=["<blank>"], clock=Clock())
    write_sudoku_csv(checkout / "train.csv", train)
    write_sudoku_csv(checkout / "test.csv", test)

    for subset, seed in (("training", 0), ("evaluation", 1)):  # ARC: a directory per subset
        (checkout / "arc-data" / subset).mkdir(parents=True)
        for i in range(2):
            (checkout / "arc-data" / subset / f"{subset[:4]}{i:04d}.json").write_text(json.dumps(arc_puzzle(seed * 10 + i)))

    for split, seed in (("train", 0), ("test", 1)):
        mazes = generate_mazes(4, 11, seed=seed)
        (checkout / f"mazes-{split}.txt").write_text("\n\n".join("\n".join(maze.question) for maze in mazes) + "\n")

    records = [{"prompt": f"Task {i}: deploy the service and check {i} endpoints.",
                "completion": f"start deployment monitoring validation end {'.' * i}"} for i in range(6)]
    (checkout / "tasks.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))

    for tasks, completions in (("python.jsonl", "outputs.jsonl"), ("tool_chains.jsonl", "tool-outputs.jsonl")):
        # another model's completions: here the task set's own reference answers
        lines = (checkout / "tasks" / tasks).read_text().splitlines()
        (checkout / completions).write_text("".join(
            json.dumps({"task_id": task["task_id"], "completion": task["reference"], "source": "reference"}) + "\n"
            for task in map(json.loads, filter(None, lines))))

    make_demo_work(checkout / "demo-work")


def arc_puzzle(seed: int) -> dict:
    """An ARC puzzle whose rule is 'recolour 1 to 2': two train pairs and a test pair."""
    rng = random.Random(seed)

    def pair() -> dict:
        width = rng.randint(2, 5)
        grid = [[rng.choice((0, 1, 3)) for _ in range(width)] for _ in range(3)]
        return {"input": grid, "output": [[2 if c == 1 else c for c in row] for row in grid]}

    return {"train": [pair(), pair()], "test": [pair()]}
