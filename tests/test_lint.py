"""The tree as a whole: no undefined names, no unused imports, one import order (the rules
pyproject.toml gives ruff). A reorganisation that leaves a stale import behind fails here."""

import subprocess
import sys

from tests.factories import REPO


def test_ruff_finds_no_undefined_names_unused_imports_or_misordered_imports():
    found = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                           capture_output=True, text=True)
    assert found.returncode == 0, found.stdout + found.stderr
