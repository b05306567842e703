"""The layers hold: `lint-imports` checks the contracts in pyproject.toml (application above flows
above stages above the library; stages independent; Prefect only in trainflow.orchestration), and
every module stays small enough to read in one sitting."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("app", "flows", "tasks", "trainflow", "bench")
MAX_MODULE_LINES = 300


def test_import_contracts_are_kept():
    completed = subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "0 broken" in completed.stdout


def test_no_module_is_longer_than_a_sitting():
    long_modules = {
        str(path.relative_to(REPO_ROOT)): length
        for package in PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        if (length := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long_modules == {}
