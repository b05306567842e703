"""The model registry and the promotion rule, without Prefect."""

import json
from pathlib import Path

import pytest

from tasks.promote_challenger import promote_challenger
from trainflow.config import RunConfig
from trainflow.errors import UserInputError
from trainflow.paths import ArtifactPaths
from trainflow.results import RunSummary
from trainflow.runs.registry import Registry


def summary(run_name: str, accuracy: float) -> RunSummary:
    run_dir = Path("/runs") / run_name
    return RunSummary(
        run_name=run_name,
        run_dir=run_dir,
        model_path=run_dir / "model.keras",
        weights_path=run_dir / "model.weights.h5",
        saved_model_path=run_dir / "saved_model",
        evaluation_path=run_dir / "evaluation.json",
        reports_dir=run_dir / "reports",
        data_fingerprint="same-test-data",
        model="mlp",
        class_names=[str(label) for label in range(10)],
        pixels="unit",
        test_accuracy=accuracy,
        test_loss=0.1,
        macro_f1=accuracy,
        epochs_completed=3,
        best_epoch=3,
        stopped_early=False,
        resumed_from=None,
        resumed_from_step=None,
    )


@pytest.fixture
def config(artifacts):
    return RunConfig(artifacts=artifacts)


def test_first_model_becomes_champion(config):
    decision = promote_challenger(config, summary("a", 0.90), tolerance=0.01)
    assert decision.promoted and decision.reason == "first model: no champion yet"
    assert Registry(ArtifactPaths.at(config.artifacts)).champion().run_name == "a"


@pytest.mark.parametrize(
    ("accuracy", "promoted"), [(0.95, True), (0.89, True), (0.8899, False), (0.5, False)]
)
def test_challenger_must_reach_champion_minus_tolerance(config, accuracy, promoted):
    promote_challenger(config, summary("champion", 0.90), tolerance=0.01)
    decision = promote_challenger(config, summary("challenger", accuracy), tolerance=0.01)
    assert decision.promoted is promoted
    assert decision.champion_accuracy == 0.90
    registry = Registry(ArtifactPaths.at(config.artifacts))
    assert registry.champion().run_name == ("challenger" if promoted else "champion")
    recorded = registry.version("challenger")
    assert recorded.decision == ("promoted" if promoted else "rejected")
    assert "champion champion's 0.9000 - tolerance 0.01" in recorded.reason
    assert recorded.parameters["epochs"] == config.epochs and recorded.code_version


def test_promote_and_rollback_move_the_pointer(config):
    promote_challenger(config, summary("a", 0.90), tolerance=0.0)
    promote_challenger(config, summary("b", 0.95), tolerance=0.0)
    promote_challenger(config, summary("c", 0.10), tolerance=0.0)
    registry = Registry(ArtifactPaths.at(config.artifacts))
    assert registry.champion().run_name == "b"
    assert registry.promote("c").run_name == "c"
    assert registry.rollback().run_name == "b"
    assert registry.rollback().run_name == "a"
    with pytest.raises(UserInputError, match="no earlier champion"):
        registry.rollback()
    with pytest.raises(UserInputError, match="'zzz' is not in the model registry"):
        registry.promote("zzz")
    pointer = json.loads(registry.champion_file.read_text())
    assert pointer["run_name"] == "a" and pointer["previous"] == []


PROMOTER = """
import sys
from tests.test_registry import summary
from tasks.promote_challenger import promote_challenger
from trainflow.config import RunConfig

artifacts, name = sys.argv[1:3]
promote_challenger(RunConfig(artifacts=artifacts), summary(name, 0.9), tolerance=0.0)
"""


def test_concurrent_promotions_are_serialised(config, tmp_path):
    """Four processes promote at once: every version is registered and the pointer is whole."""
    import subprocess
    import sys

    names = [f"challenger-{index}" for index in range(4)]
    processes = [
        subprocess.Popen([sys.executable, "-c", PROMOTER, str(config.artifacts), name])
        for name in names
    ]
    assert [process.wait(timeout=120) for process in processes] == [0] * len(names)
    registry = Registry(ArtifactPaths.at(config.artifacts))
    assert sorted(version.run_name for version in registry.versions()) == names
    champion = registry.champion()
    assert champion.run_name in names
    assert len(champion.previous) == len(names) - 1  # every promotion saw the one before it
