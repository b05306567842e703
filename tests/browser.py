"""A real browser for the tests: Debian's `chromium`, headless, as a person's browser would load a
page (`.ci/run` installs it when it is missing).

`rendered_page` loads a URL until its rendered DOM shows what the test waits for, and saves a
screenshot of it beside the test's other files, so that a failure can be looked at."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (`apt-get install chromium`; .ci/run installs it)"
)
# How long the page's scripts may run, in the browser's virtual time (which waits for the
# network), before the DOM is taken: a single-page app fetches its settings, then its data.
SETTLE_MILLISECONDS = 20_000
LOAD_TIMEOUT = 120  # one load, in wall seconds, on a loaded machine
WAIT_TIMEOUT = 300  # for the page to show what is awaited, over as many loads as that takes


def _chromium(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # as root in CI
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1440,1100",
            f"--virtual-time-budget={SETTLE_MILLISECONDS}",
            *arguments,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=LOAD_TIMEOUT,
    )


def rendered_page(url: str, shows: Callable[[str], bool], screenshot: Path) -> str:
    """The DOM of `url` once `shows(dom)` holds (loading it again until then, failing after
    `WAIT_TIMEOUT` with the last DOM's end), with a screenshot of the page saved at `screenshot`."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        dom = _chromium("--dump-dom", url).stdout
        if shows(dom) or time.monotonic() > deadline:
            break
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    _chromium(f"--screenshot={screenshot}", url)
    assert shows(dom), (
        f"{url} did not show what was awaited (screenshot {screenshot}): {dom[-3000:]}"
    )
    return dom
