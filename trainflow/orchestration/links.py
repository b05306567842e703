"""Links into the Prefect UI for the flow run in progress."""

from __future__ import annotations

from prefect.runtime import flow_run
from prefect.utilities.urls import url_for


def flow_run_page() -> str | None:
    """This flow run's page in the Prefect UI, as Prefect links it; None when Prefect knows no UI
    (a run on a server of its own, which stops with it: `app/flow_runs.py`)."""
    return url_for("flow-run", obj_id=flow_run.id) or None
