"""The benchmark harness runs end to end (on tiny settings; the real numbers are BENCHMARKS.md's).

Under `-m slow`: even tiny, it starts every server and process a benchmark does (about 4 minutes
of CI on 2 cores), and what it proves is the developers' `./dev bench`, which runs it whole.
"""

import pytest

from bench.harness import MNIST_TEST_SPLIT
from bench.run import main
from tests.conftest import needs_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    arguments = ["--repeats", "1", "--epochs", "1", "--synthetic-rows", "500"]
    assert main([*arguments, "--synthetic-epochs", "1", "--output", str(output)]) == 0
    return output.read_text()


def test_benchmark_harness_writes_the_table(table):
    assert "| startup: `trainflow --help` |" in table
    assert "| data preparation, synthetic (500): cached second run |" in table
    assert "| checkpoint overhead, every epoch, synthetic (500) |" in table


@needs_path(MNIST_TEST_SPLIT, "the MNIST test split")
def test_benchmark_harness_measures_every_target_on_real_data(table):
    for measure in (
        "orchestration overhead, 1 epochs of mlp on MNIST test split, against a running",
        "fixed cost: Prefect orchestration",
        "recovery: checkpointed steps redone after a SIGKILL | 0 ",
        "recovery: restart to the first resumed step done",
        "input pipeline: samples/s",
        "checkpoint overhead, every 100 steps (and every epoch), MNIST test split",
        "checkpoint overhead, every epoch, MNIST test split, into the local S3 server",
        "recovery from the store: restart on a machine with nothing local",
        "a whole run, 1 epochs of mlp on the MNIST test split: artifacts in the local S3 server",
        "training steps/s (global batch 32), mlp on MNIST test split: 2 workers",
        "checkpoint overhead under MultiWorkerMirroredStrategy, 2 workers",
        "per-step cost of the distributed step against Keras fit",
    ):
        assert f"| {measure}" in table
