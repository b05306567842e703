"""Shared fixtures: small synthetic datasets in every source format, and the Prefect test harness."""

from __future__ import annotations

import gzip
import os
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from app.stack.prefect_server import LocalServer
from trainflow.environment import configure_environment

# Property-based tests try the same examples on every run (derandomize), so that a failure in CI
# fails again on a developer's machine; `-m slow` adds runs on many random examples
# (tests/test_fuzz_readers.py). --hypothesis-profile=NAME picks another profile.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")

configure_environment()

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST_TEST_SPLIT = REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"
IMAGE_SIZE = 28

# CI must prove the real-data promises: there a missing dataset fails the tests instead of skipping.
IN_CI = os.environ.get("CI") == "true"


def needs_path(path: Path, what: str) -> pytest.MarkDecorator:
    """Skip a test when `path` is missing, except in CI (CI=true), where the test runs and fails."""
    return pytest.mark.skipif(not path.exists() and not IN_CI, reason=f"{what} is not at {path}")


needs_shared_mnist = needs_path(
    SHARED_MNIST_TEST_SPLIT / "t10k-images-idx3-ubyte.gz", "the real MNIST test split"
)


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable MNIST-shaped data: class c is a bright 6x6 square at a class-specific place,
    on uniform noise; every class appears equally often."""
    generator = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.uint8) % 10
    generator.shuffle(labels)
    images = generator.integers(0, 60, size=(count, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for index, label in enumerate(labels):
        row, column = 2 + 8 * (label // 4), 2 + 8 * (label % 4)
        images[index, row : row + 6, column : column + 6] = 255
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` (uint8) as a gzipped IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())
    return path


def write_idx_pair(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write `<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz`."""
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A single-split IDX directory of 400 synthetic images (split three ways by prepare_data)."""
    directory = tmp_path / "idx"
    write_idx_pair(directory, "t10k", *synthetic_images(400, seed=1))
    return directory


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    """An npz with x_train, y_train (300) and x_test, y_test (100)."""
    x_train, y_train = synthetic_images(300, seed=2)
    x_test, y_test = synthetic_images(100, seed=3)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


# The `run` fixture trains on idx_dir's 280 training examples in batches of 32.
BATCH_SIZE = 32
STEPS_PER_EPOCH = 9


@pytest.fixture
def run(idx_dir: Path, artifacts: Path):
    """A small run's config, prepared data and paths."""
    from tasks.prepare_data import prepare_data
    from trainflow.config import RunConfig
    from trainflow.paths import ArtifactPaths

    config = RunConfig(
        dataset=f"idx:{idx_dir}",
        epochs=4,
        batch_size=BATCH_SIZE,
        patience=10,
        artifacts=artifacts,
        run_name="unit",
    )
    root = ArtifactPaths.at(artifacts)
    data = prepare_data(config.source, config.preparation, root)
    paths = root.run("unit")
    return config, data, paths


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the test session, so that nothing touches the user's own."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database for flow tests (started once per session)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def cli_environment(prefect_home: Path) -> dict[str, str]:
    """Environment for `trainflow` subprocesses: the session's PREFECT_HOME, no server URL."""
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    environment["PREFECT_HOME"] = str(prefect_home / "cli")
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


# The installed console script, as a user runs it.
TRAINFLOW = str(Path(sys.executable).with_name("trainflow"))


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` (with its services) on a free loopback port and its own
    PREFECT_HOME; yields its API URL and stops it when the session ends, also after failures."""
    with LocalServer(home=tmp_path_factory.mktemp("prefect-server-home"), services=True) as server:
        yield server.api_url


@pytest.fixture
def server_environment(prefect_server: str, cli_environment: dict[str, str]) -> dict[str, str]:
    """Environment for `trainflow` subprocesses that report to the session's Prefect server."""
    return {**cli_environment, "PREFECT_API_URL": prefect_server}


@pytest.fixture(scope="module")
def s3_store():
    """A real S3-compatible server (moto's) on 127.0.0.1 for the tests of one module."""
    from tests.s3_server import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` (SQLite, artifacts served) on 127.0.0.1 for the test session, as
    `trainflow stack up --mlflow` starts it (seconds to start: one for every module)."""
    from app.stack.mlflow_server import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture
def bucket(s3_store, request) -> str:
    """A new bucket in `s3_store`, named after the test."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    return s3_store.make_bucket(name)


def postgres_binaries_found() -> bool:
    """True when the machine has PostgreSQL server binaries `trainflow stack up --postgres` uses."""
    from app.stack.postgres import find_binaries
    from trainflow.errors import UserInputError

    try:
        find_binaries()
    except UserInputError:
        return False
    return True


# CI installs PostgreSQL (.ci/run); elsewhere the tests that need it are skipped without it.
needs_postgres = pytest.mark.skipif(
    not postgres_binaries_found() and not IN_CI,
    reason="no PostgreSQL server binaries (apt-get install postgresql)",
)
