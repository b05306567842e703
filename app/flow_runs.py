"""Running a flow from the command line: the options checked first, then the flow against
PREFECT_API_URL or a Prefect server of the run's own, started while TensorFlow is imported."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from app.options import config_from_arguments

SEE_RUNS_IN_THE_UI = (
    "trainflow: this run reports to a Prefect server of its own, which stops with it; to see "
    "runs in the Prefect UI, start one with `trainflow stack up` and run with "
    "PREFECT_API_URL=http://127.0.0.1:4200/api"
)


def flow_with_server(
    args: argparse.Namespace, import_flow: Callable[[], Callable[[Any], Any]]
) -> Any:
    """Run the flow `import_flow()` returns, on the config the options give (None after printing
    what is wrong with them), against PREFECT_API_URL or a local server of its own. The flow is
    imported (TensorFlow and Prefect with it) only once the options are valid, while the server
    boots."""
    config = config_from_arguments(args)
    if config is None:
        return None
    from trainflow.data.sources import locate_source_files
    from trainflow.paths import ArtifactPaths

    locate_source_files(config.source)  # a missing path fails here, before any server starts
    ArtifactPaths.at(config.artifacts)  # and so does a store that is missing or refuses us
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        from app.stack.prefect_server import LocalServer

        server = LocalServer().start()  # it boots while TensorFlow is imported below
        warming = threading.Thread(target=server.warm_up, daemon=True)
        warming.start()
        os.environ["PREFECT_API_URL"] = server.api_url
        # At exit, after Prefect's own exit handlers (registered later, run earlier) have sent
        # the last logs and events to it.
        atexit.register(server.stop)
    run_flow = import_flow()
    from trainflow.training.builders import check_builder

    check_builder(config.model)  # a builder that cannot be imported fails before any work
    if not args.debug:
        from trainflow.errors import hide_user_error_tracebacks

        hide_user_error_tracebacks()  # Prefect logs a failed task's traceback to the console
    if server is not None:
        warming.join()
        server.wait_until_healthy()
    # Libraries print to stdout; with --json, stdout carries the result and nothing else.
    with (
        contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout),
        _on_a_server_of_its_own(server),
    ):
        return run_flow(config)


def _on_a_server_of_its_own(own_server: Any) -> contextlib.AbstractContextManager[Any]:
    """Prefect's settings for a flow run against a server started for it, which dies with it:
    no heartbeats (they let a lasting server mark a vanished run Crashed; here no one is left to
    hear them, and joining their thread at the end of the flow run, in 1-second sleeps, cost up
    to 1 s of every run) and no link to a UI that the server does not serve and that would die
    with it (an empty PREFECT_UI_URL: Prefect then logs no "View at" link). Nothing changes
    against PREFECT_API_URL."""
    if own_server is None:
        return contextlib.nullcontext()
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_UI_URL,
        temporary_settings,
    )

    print(SEE_RUNS_IN_THE_UI, file=sys.stderr)
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_UI_URL: ""})
