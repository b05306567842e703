"""The retraining flow: train a challenger, then promote it or record why not."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from flows.training import training_flow
from tasks.promote_challenger import promote_challenger_task
from tasks.track_run import mirror_promotion_task
from trainflow.config import DEFAULT_TOLERANCE, RunConfig
from trainflow.results import PromotionDecision


@flow(name="trainflow-retrain")
def retraining_flow(
    config: RunConfig = RunConfig(),
    tolerance: Annotated[float, Field(ge=0, le=1)] = DEFAULT_TOLERANCE,
) -> PromotionDecision:
    """Train a new model (a run of the training flow) and make it the champion if its test
    accuracy is at least the champion's minus `tolerance`."""
    summary = training_flow(config)
    decision = promote_challenger_task(config, summary, tolerance)
    if config.tracking_uri:
        mirror_promotion_task(config, decision)
    return decision
