"""README.md stays true: its two opening commands are the ones CI and users run, every
hrm-eval command it shows is accepted by the CLI as written, and its recipes run as written
(in a copy of the checkout, see tests/readme_sandbox.py)."""

import argparse
import importlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.cli import COMMANDS

from tests.factories import REPO
from tests.readme_sandbox import MY_RUN_STEPS, Sandbox, make_readme_inputs, sandbox
from tests.s3server import S3_ENV, start_s3_server

README = (REPO / "README.md").read_text()


def code_blocks(kind: str = "bash", text: str = README) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", text, flags=re.S)


def section(title: str) -> str:
    """The README's `## title` section, up to the next one."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:] if end == -1 else README[start:end]


def commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")
    return [line.split("#", 1)[0].strip() for line in joined.splitlines() if line.split("#", 1)[0].strip()]


def test_the_readme_opens_with_the_demo_and_test_commands():
    first = commands(code_blocks()[0])
    assert first == ["./scripts/demo", "./scripts/test"]
    assert README.index("```bash") < README.index("## ")  # before any other section


def test_ci_runs_the_readme_test_command():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "./scripts/test" in ci


def hrm_eval_commands() -> list[list[str]]:
    found = []
    for block in code_blocks():
        for line in commands(block):
            if line.startswith("hrm-eval "):
                found.append(shlex.split(line)[1:])
    return found


@pytest.mark.parametrize("argv", hrm_eval_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_hrm_eval_command_in_the_readme_parses(argv):
    module_name, _ = COMMANDS[argv[0]]
    parser = argparse.ArgumentParser(prog=f"hrm-eval {argv[0]}", exit_on_error=False)
    importlib.import_module(module_name).configure(parser)
    parser.parse_args(argv[1:])


def test_every_config_the_readme_names_exists():
    for name in set(re.findall(r"configs/[\w.-]+\.yaml", README)):
        assert (REPO / name).is_file(), name


# --------------------------------------------------------------------------- running the README

OPENING = ""  # the blocks before the first section: ./scripts/demo and ./scripts/test, which CI runs
CLUSTER = "Run on a Ray cluster"  # its block runs in a test of its own, which checks where results land


def section_blocks() -> list[tuple[str, str]]:
    """(section title, block) for every bash block of the README, in order."""
    found = []
    for part in re.split(r"\n(?=## )", README):
        title = part[3:part.index("\n")] if part.startswith("## ") else OPENING
        found += [(title, block) for block in code_blocks(text=part)]
    return found


def starts_ray(block: str) -> bool:
    return any(re.match(r"ray |hrm-eval (run|demo)\b", line) and "--dry-run" not in line for line in commands(block))


def written_by(block: str) -> list[str]:
    """What the block's commands name as what they write: each --output, the destination of
    `convert reference`, the report `hrm-eval report` regenerates."""
    found = []
    for argv in map(shlex.split, commands(block)):
        if "--output" in argv:
            found.append(argv[argv.index("--output") + 1])
        elif argv[:3] == ["hrm-eval", "convert", "reference"]:
            found.append(argv[4])
        elif argv[:2] == ["hrm-eval", "report"]:
            found.append(f"{argv[2]}/report.html")
    return found


def other_blocks() -> list:
    return [pytest.param(block, id=commands(block)[0][:60], marks=[pytest.mark.ray] if starts_ray(block) else [])
            for title, block in section_blocks() if title not in (OPENING, CLUSTER)]


@pytest.fixture(scope="module")
def readme_s3() -> Iterator[dict[str, str]]:
    """A loopback S3 server of this module's own, holding the buckets the README names, and
    the environment that points the AWS chain at it."""
    import boto3

    server, endpoint = start_s3_server()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    client = boto3.client("s3", endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    for bucket in set(re.findall(r"s3://([a-z0-9.-]+)/", "".join(code_blocks()))):
        client.create_bucket(Bucket=bucket)
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture(scope="module")
def readme_box(tmp_path_factory) -> Iterator[Sandbox]:
    """A copy of the checkout holding small stand-ins for every input the README names."""
    with sandbox(tmp_path_factory.mktemp("readme")) as box:
        make_readme_inputs(box.checkout)
        yield box


def stored(uri: str, checkout: Path, s3_env: dict[str, str]) -> bool:
    if uri.startswith("s3://"):
        import boto3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name=s3_env["AWS_DEFAULT_REGION"],
                              aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"])
        return client.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] > 0
    return (checkout / uri).exists()


@pytest.mark.parametrize("block", other_blocks())
def test_every_other_readme_command_runs_as_written_and_writes_what_it_names(block, readme_box, readme_s3):
    done = readme_box.run(block, timeout=180, isolate=starts_ray(block), activated=True, env=readme_s3)
    assert done.returncode == 0, done.stdout[-8000:]
    missing = [uri for uri in written_by(block) if not stored(uri, readme_box.checkout, readme_s3)]
    assert not missing, done.stdout[-8000:]


@pytest.mark.ray
def test_the_cluster_recipe_runs_as_written_after_the_demo_and_writes_the_report_where_the_readme_says(readme_box):
    text = section(CLUSTER)
    (recipe,) = code_blocks(text=text)
    results = re.search(r"The results are then in `([^`]+)`", text).group(1)
    assert "RAY_AUTH_MODE=token" in recipe and "disabled" not in text  # authentication stays on
    done = readme_box.run(recipe, timeout=240, isolate=True)

    assert done.returncode == 0, done.stdout[-8000:]
    run = readme_box.checkout / results
    assert (run / "report.html").is_file() and (run / "metrics.json").is_file(), sorted(run.parent.rglob("*"))
    assert f"report: {run / 'report.html'}" in done.stdout  # the job's log names where it really is
    assert "Stopped all" in done.stdout  # the recipe's own `ray stop`


def test_the_readmes_sweep_config_is_valid_and_plans_over_the_files_it_names(readme_box, readme_s3):
    (sweep,) = code_blocks("yaml")
    (readme_box.checkout / "sweep.yaml").write_text(sweep)
    done = readme_box.run("hrm-eval run sweep.yaml --dry-run", timeout=120, activated=True, env=readme_s3)
    assert done.returncode == 0, done.stdout[-4000:]
    chosen = re.findall(r"^  my-run-step_(\d+) \(step", done.stdout, flags=re.M)
    assert sorted(map(int, chosen)) == sorted(sorted(MY_RUN_STEPS)[::-2][:10])  # every 2nd step back from the newest
    assert re.search(r"^run \S+: results s3://my-bucket/hrm-eval/", done.stdout, flags=re.M)
