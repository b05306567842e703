"""The whole flow under a temporary Prefect server."""

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

from flows.retraining import retraining_flow
from flows.training import training_flow
from trainflow.config import RunConfig
from trainflow.errors import DataSourceError
from trainflow.reports.thumbnails import THUMBNAIL_MAX_SIDE

pytestmark = pytest.mark.usefixtures("prefect_harness")


def task_run_counts(flow_run_id) -> dict[str, int]:
    """How many attempts each task of a flow run took."""
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {task_run.name.rsplit("-", 1)[0]: task_run.run_count for task_run in task_runs}


def published_artifacts(*keys: str) -> dict:
    """The newest artifact of each key."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys)))
        )
    return {artifact.key: artifact for artifact in sorted(found, key=lambda item: item.created)}


def small_config(idx_dir, artifacts, **options) -> RunConfig:
    return RunConfig(
        **{"dataset": f"idx:{idx_dir}", "epochs": 2, "artifacts": artifacts, **options}
    )


def test_flow_trains_persists_and_evaluates(idx_dir, artifacts):
    summary = training_flow(small_config(idx_dir, artifacts, run_name="whole"))
    assert summary.run_name == "whole" and summary.epochs_completed == 2
    assert summary.resumed_from is None
    for location in (summary.model_path, summary.weights_path, summary.evaluation_path):
        path = Path(location)  # a local artifacts root: the locations are paths
        assert path.is_file() and path.is_relative_to(artifacts.resolve() / "runs" / "whole")
    assert (Path(summary.saved_model_path) / "saved_model.pb").is_file()
    evaluation = json.loads(Path(summary.evaluation_path).read_text())
    assert evaluation["accuracy"] == summary.test_accuracy
    record = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert record["status"] == "completed" and record["test_accuracy"] == summary.test_accuracy
    artifacts_by_key = published_artifacts(
        "trainflow-run-whole", "trainflow-classes-whole", "trainflow-progress-whole"
    )
    assert artifacts_by_key["trainflow-progress-whole"].data == 100.0
    assert "test accuracy" in artifacts_by_key["trainflow-run-whole"].data
    assert "learning_curves.png" in artifacts_by_key["trainflow-run-whole"].data
    # The report's pictures are in the summary itself, small PNGs the UI shows without a server.
    embedded = re.findall(
        r"!\[([^\]]+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)",
        artifacts_by_key["trainflow-run-whole"].data,
    )
    assert [title for title, _ in embedded] == [
        "Learning curves",
        "Confusion matrix",
        "Most confident mistakes",
    ]
    for _, encoded in embedded:
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
            assert picture.format == "PNG" and max(picture.size) <= THUMBNAIL_MAX_SIDE
    classes = json.loads(artifacts_by_key["trainflow-classes-whole"].data)
    assert [row["label"] for row in classes] == list(range(10))


def test_a_failed_training_attempt_is_retried_and_resumes(idx_dir, artifacts):
    config = small_config(idx_dir, artifacts, epochs=4, fail_at_epoch=2, run_name="retry")
    state = training_flow(config, return_state=True)
    summary = state.result()
    assert summary.resumed_from == 2 and summary.epochs_completed == 4
    counts = task_run_counts(state.state_details.flow_run_id)
    assert counts["train_model"] == 2 and counts["prepare_data"] == 1


def test_unnamed_runs_get_distinct_names(idx_dir, artifacts):
    first = training_flow(small_config(idx_dir, artifacts, epochs=1))
    second = training_flow(small_config(idx_dir, artifacts, epochs=1))
    assert first.run_name != second.run_name
    assert second.resumed_from is None


def test_same_run_name_continues_and_fresh_starts_over(idx_dir, artifacts):
    training_flow(small_config(idx_dir, artifacts, run_name="again"))
    more = training_flow(small_config(idx_dir, artifacts, run_name="again", epochs=3))
    assert more.resumed_from == 2 and more.epochs_completed == 3
    fresh = training_flow(small_config(idx_dir, artifacts, run_name="again", fresh=True))
    assert fresh.resumed_from is None and fresh.epochs_completed == 2


def test_bad_data_fails_at_once_without_retries_and_marks_the_run_failed(tmp_path, artifacts):
    (tmp_path / "empty").mkdir()
    config = small_config(tmp_path / "empty", artifacts, run_name="bad")
    state = training_flow(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(DataSourceError, match="holds no recognisable files"):
        state.result()
    assert task_run_counts(state.state_details.flow_run_id)["prepare_data"] == 1
    record = json.loads((artifacts / "runs" / "bad" / "run.json").read_text())
    assert record["status"] == "failed" and "holds no recognisable files" in record["error"]


def test_retraining_flow_registers_and_publishes_the_decision(idx_dir, artifacts):
    config = small_config(idx_dir, artifacts, epochs=1, run_name="challenger-1")
    first = retraining_flow(config, tolerance=0.0)
    assert first.promoted and first.champion_run is None
    second = retraining_flow(config.model_copy(update={"run_name": "challenger-2"}), tolerance=1.0)
    assert second.promoted and second.champion_run == "challenger-1"
    summary = published_artifacts("trainflow-run-challenger-2")["trainflow-run-challenger-2"]
    assert "| promotion | promoted to champion: test accuracy" in summary.data


@pytest.mark.parametrize(
    "parameters",
    [
        {"epochs": 0},
        {"batch_size": -32},
        {"patience": -1},
        {"model": "resnet"},
        {"dataset": "ftp:somewhere"},
        {"run_name": "../escape"},
        {"run_name": "a/b"},
        {"run_name": "nul\x00byte"},
        {"epochs": "ten"},
        {"unknown_option": 1},
    ],
)
def test_bad_parameters_fail_validation_before_any_work(parameters, artifacts):
    """As a deployment's parameters arrive: a dict, validated by Prefect against `RunConfig`."""
    state = training_flow(config={**parameters, "artifacts": str(artifacts)}, return_state=True)
    assert state.is_failed() and "Validation of flow parameters failed" in state.message
    assert not artifacts.exists()
