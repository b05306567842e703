"""Training on the streaming path: a SIGKILL mid-epoch resumes at the checkpoint's step and ends
bit for bit where an uninterrupted streaming run does, with the order the run started with; and a
run on data several times its memory budget completes within the budget (peak RSS of the child)."""

import json
import logging

import numpy as np

from bench.harness import run_measuring_peak
from tasks.prepare_data import prepare_data
from tests.checkpoints_on_disk import final_checkpoint, newest_complete_checkpoint
from tests.conftest import TRAINFLOW, write_idx_pair
from tests.test_exact_resume import (
    KILL_IN_SUBPROCESS,
    STEPS_PER_EPOCH,
    TOTAL_STEPS,
    deterministic_config,
    kill_in_subprocess,
    train_counting_steps,
)
from trainflow.checkpoints.compare import differing_arrays
from trainflow.checkpoints.state import DataOrder
from trainflow.data import split_writer
from trainflow.paths import ArtifactPaths
from trainflow.training import inputs

# 16 rows a row group: the 280 training rows of idx_dir are 18 row groups.
GROUP_BYTES = 16 * 28 * 28
# With the 8 MiB budget, windows of 3 row groups (48 rows): 6 windows an epoch.
WINDOW_SHARE = 8 * 2**20 // (3 * GROUP_BYTES)
SMALL_WINDOWS = (
    f"from trainflow.training import inputs; inputs.WINDOW_SHARE_OF_BUDGET = {WINDOW_SHARE}\n"
)


def test_sigkill_mid_epoch_on_the_streaming_path_resumes_bitwise(
    idx_dir, artifacts, monkeypatch, caplog
):
    monkeypatch.setattr(split_writer, "PREPARED_ROW_GROUP_BYTES", GROUP_BYTES)
    monkeypatch.setattr(inputs, "WINDOW_SHARE_OF_BUDGET", WINDOW_SHARE)
    streaming = {"data_input": "stream", "memory_budget": "8MiB"}
    root = ArtifactPaths.at(artifacts)
    reference_config = deterministic_config(idx_dir, artifacts, "mlp", "reference", **streaming)
    data = prepare_data(reference_config.source, reference_config.preparation, root)
    reference, _ = train_counting_steps(reference_config, data, root.run("reference"))
    assert reference.data_order == DataOrder(input="stream", window_groups=3)

    kill_step = 2 * STEPS_PER_EPOCH + 7  # epoch 3, batch 7: in its third window
    killed_config = deterministic_config(
        idx_dir, artifacts, "mlp", "killed", kill_at_step=kill_step, **streaming
    )
    kill_in_subprocess(killed_config, SMALL_WINDOWS + KILL_IN_SUBPROCESS)
    paths = root.run("killed")
    checkpoint = newest_complete_checkpoint(paths.resume_dir)
    assert (checkpoint.global_step, checkpoint.step_in_epoch) == (25, 7)
    assert checkpoint.data_order == DataOrder(input="stream", window_groups=3)

    # Resumed with the default window size, and a budget that would choose the in-memory path:
    # the run keeps the order it started with.
    monkeypatch.setattr(inputs, "WINDOW_SHARE_OF_BUDGET", 4)
    resumed_config = killed_config.model_copy(
        update={"data_input": "auto", "memory_budget": "1GiB"}
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        resumed, steps_trained = train_counting_steps(resumed_config, data, paths)
    assert (
        "windows of 3 row groups of 16 rows" in caplog.text and "as the run started" in caplog.text
    )
    assert (resumed.resumed_from_step, steps_trained) == (25, TOTAL_STEPS - 25)
    assert resumed.data_order == reference.data_order
    assert resumed.history == reference.history
    reference_final = final_checkpoint(root.run("reference"))
    assert differing_arrays(final_checkpoint(paths), reference_final) == []


def test_data_four_times_the_memory_budget_trains_within_it(tmp_path, server_environment):
    """A run on 200 MB of pixels with a 48 MiB budget streams, and its peak RSS exceeds a tiny run's
    by less than the budget and a fixed allowance: the in-memory path would hold the data twice."""
    budget_mib, allowance_mib = 48, 96
    peaks = {}
    for name, count in (("tiny", 2_000), ("large", 255_000)):
        source = tmp_path / name
        generator = np.random.default_rng(0)
        images = generator.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        write_idx_pair(source, "t10k", images, (np.arange(count) % 10).astype(np.uint8))
        del images
        arguments = [
            TRAINFLOW, "run", "--json", "--dataset", f"idx:{source}", "--epochs", "1",
            "--batch-size", "256", "--memory-budget", f"{budget_mib}MiB",
            "--artifacts", str(tmp_path / "artifacts"), "--run-name", name,
        ]  # fmt: skip
        with (
            open(tmp_path / f"{name}.json", "w") as out,
            open(tmp_path / f"{name}.log", "w") as log,
        ):
            code, peaks[name] = run_measuring_peak(arguments, server_environment, out, log)
        assert code == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        assert summary["data_input"] == ("memory" if name == "tiny" else "stream")
    growth = (peaks["large"] - peaks["tiny"]) / 2**20
    assert growth < budget_mib + allowance_mib, (peaks, growth)
