"""A flow run whose process is SIGKILLed, recovered through the Prefect server."""

import json
import signal
import subprocess

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Crashed

from app.stack.prefect_server import PREFECT_COMMAND
from tests.conftest import REPO_ROOT, STEPS_PER_EPOCH, TRAINFLOW


def test_crashed_flow_run_resumes_through_prefect_flow_run_retry(
    idx_dir, artifacts, server_environment, prefect_server
):
    kill_step = STEPS_PER_EPOCH + 4  # epoch 2, batch 4; the last checkpoint is at step 12
    killed = subprocess.run(
        [
            TRAINFLOW,
            "run",
            "--dataset",
            f"idx:{idx_dir}",
            "--epochs",
            "3",
            "--checkpoint-every",
            "4",
            "--kill-at-step",
            str(kill_step),
            "--run-name",
            "crashed",
            "--artifacts",
            str(artifacts),
        ],
        env=server_environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    record_path = artifacts / "runs" / "crashed" / "run.json"
    flow_run_id = json.loads(record_path.read_text())["flow_run_id"]

    with (
        temporary_settings({PREFECT_API_URL: prefect_server}),
        get_client(sync_client=True) as client,
    ):
        # Nothing saw the process die, so the server still has the run Running; a worker (or a
        # heartbeat automation) would mark it Crashed, as the test does here.
        assert client.read_flow_run(flow_run_id).state.is_running()
        client.set_flow_run_state(flow_run_id, Crashed(message="process killed"), force=True)

    retry = subprocess.run(
        [
            PREFECT_COMMAND,
            "flow-run",
            "retry",
            flow_run_id,
            "--entrypoint",
            "flows/training.py:training_flow",
        ],
        cwd=REPO_ROOT,
        env=server_environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert retry.returncode == 0, retry.stdout[-2000:] + retry.stderr[-2000:]
    assert "Resuming run crashed from checkpoint step-000000012.weights.h5" in retry.stderr

    with (
        temporary_settings({PREFECT_API_URL: prefect_server}),
        get_client(sync_client=True) as client,
    ):
        assert client.read_flow_run(flow_run_id).state.is_completed()
    record = json.loads(record_path.read_text())
    assert record["status"] == "completed" and record["flow_run_id"] == flow_run_id
    assert record["resumed_from"] == 1 and record["epochs_completed"] == 3
