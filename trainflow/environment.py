"""Process-wide defaults for running the flow, applied before Prefect and TensorFlow are imported."""

from __future__ import annotations

import logging
import os

ENVIRONMENT_DEFAULTS = {
    # Send trainflow's log records through Prefect's handlers: the console and the run's logs in the UI.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "trainflow",
    # ... and outside a flow run (the plain stage functions, called directly), to the console only.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # The machines are offline: no usage reports from a local server.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # TensorFlow's C++ start-up notices (no GPU, CPU instructions) are noise on every run.
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def configure_environment() -> None:
    """Apply the defaults that the user has not set, and let trainflow's INFO records through."""
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    logging.getLogger("trainflow").setLevel(logging.INFO)
