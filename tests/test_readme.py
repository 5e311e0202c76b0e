"""README.md stays true: its two opening commands are the ones CI and users run, and every
hrm-eval command it shows is accepted by the CLI as written."""

import argparse
import importlib
import re
import shlex

import pytest

from jobs.cli import COMMANDS

from tests.factories import REPO

README = (REPO / "README.md").read_text()


def code_blocks(kind: str = "bash") -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README, flags=re.S)


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
