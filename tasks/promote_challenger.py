"""Retraining's last stage: register the new model and promote it if it is at least as good."""

from __future__ import annotations

import logging

from prefect import task

from trainflow.config import RunConfig
from trainflow.orchestration.summary import publish_summary
from trainflow.paths import ArtifactPaths
from trainflow.recipe import ModelRecipe
from trainflow.results import PromotionDecision, RunSummary
from trainflow.runs.registry import ModelVersion, Registry, code_version, now
from trainflow.training.scoring import accuracy_on, saved_contract

logger = logging.getLogger("trainflow.promote")


def promote_challenger(
    config: RunConfig, summary: RunSummary, tolerance: float
) -> PromotionDecision:
    """Register `summary`'s model; promote it when its test accuracy is at least the champion's
    minus `tolerance`, both measured on the challenger's test data."""
    artifacts = ArtifactPaths.at(config.artifacts)
    registry = Registry(artifacts)
    with registry.locked():
        champion = registry.champion_version()
        if champion is None:
            champion_accuracy, promoted, reason = None, True, "first model: no champion yet"
        else:
            champions_run = artifacts.run(champion.run_name)
            champion_accuracy = (
                champion.test_accuracy
                if champion.data_fingerprint == summary.data_fingerprint
                else accuracy_on(
                    artifacts.storage.local_copy(champions_run.keras_model),
                    artifacts.data(summary.data_fingerprint),
                    saved_contract(artifacts.storage.local_copy(champions_run.model_metadata)),
                    ModelRecipe(model=champion.parameters.get("model", "mlp")),
                )
            )
            promoted = summary.test_accuracy >= champion_accuracy - tolerance
            comparison = ">=" if promoted else "<"
            reason = (
                f"test accuracy {summary.test_accuracy:.4f} {comparison} champion {champion.run_name}'s "
                f"{champion_accuracy:.4f} - tolerance {tolerance}"
            )
        registry.register(
            ModelVersion(
                run_name=summary.run_name,
                decision="promoted" if promoted else "rejected",
                reason=reason,
                test_accuracy=summary.test_accuracy,
                test_loss=summary.test_loss,
                data_fingerprint=summary.data_fingerprint,
                model_path=summary.model_path,
                weights_path=summary.weights_path,
                saved_model_path=summary.saved_model_path,
                parameters=config.model_dump(mode="json"),
                code_version=code_version(),
                registered_at=now(),
            )
        )
    logger.info("%s %s: %s", "Promoted" if promoted else "Rejected", summary.run_name, reason)
    return PromotionDecision(
        run_name=summary.run_name,
        promoted=promoted,
        reason=reason,
        challenger_accuracy=summary.test_accuracy,
        champion_run=None if champion is None else champion.run_name,
        champion_accuracy=champion_accuracy,
        tolerance=tolerance,
    )


@task(name="promote_challenger")
def promote_challenger_task(
    config: RunConfig, summary: RunSummary, tolerance: float
) -> PromotionDecision:
    """Decide, and add the decision to the run's summary artifact."""
    decision = promote_challenger(config, summary, tolerance)
    verdict = "promoted to champion" if decision.promoted else "rejected"
    publish_summary(config, summary, extra=f"| promotion | {verdict}: {decision.reason} |\n")
    return decision
