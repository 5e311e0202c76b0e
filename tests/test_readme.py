"""README.md stays true: its two opening commands are the ones CI and users run, every
hrm-eval command it shows is accepted by the CLI as written, and its recipes run as written
(in a copy of the checkout, see tests/readme_sandbox.py)."""

import argparse
import importlib
import re
import shlex

import pytest

from jobs.cli import COMMANDS

from tests.factories import REPO
from tests.readme_sandbox import make_demo_work, sandbox

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


@pytest.mark.ray
def test_the_cluster_recipe_runs_as_written_after_the_demo_and_writes_the_report_where_the_readme_says(tmp_path):
    text = section("Run on a Ray cluster")
    (recipe,) = code_blocks(text=text)
    results = re.search(r"The results are then in `([^`]+)`", text).group(1)
    assert "RAY_AUTH_MODE=token" in recipe and "disabled" not in text  # authentication stays on
    with sandbox(tmp_path) as box:
        make_demo_work(box.checkout / "demo-work")
        done = box.run(recipe, timeout=240, starts_ray=True)

        assert done.returncode == 0, done.stdout[-8000:]
        run = box.checkout / results
        assert (run / "report.html").is_file() and (run / "metrics.json").is_file(), sorted(run.parent.rglob("*"))
        assert f"report: {run / 'report.html'}" in done.stdout  # the job's log names where it really is
        assert "Stopped all" in done.stdout  # the recipe's own `ray stop`
