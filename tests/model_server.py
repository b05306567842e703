"""`mlflow models serve` of one logged model, for the tests: a real scoring server on a free port
of 127.0.0.1, answering `/invocations` as a consumer calls it."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from app.stack.mlflow_server import MLFLOW_COMMAND
from app.stack.prefect_server import ServerProcess, free_port

# Loading TensorFlow and the model in the scoring process takes a while on a busy 2-core machine.
SERVE_START_TIMEOUT = 300


class ModelServer(ServerProcess):
    """`mlflow models serve -m MODEL_URI --env-manager local` (the model fetched from the tracking
    server at `tracking_uri`); a context manager. It runs in a session of its own: the command
    serves from a child process, and stopping the session stops both."""

    name = "MLflow model server"

    def __init__(self, model_uri: str, tracking_uri: str) -> None:
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health_url = self.url
        self.detached = True
        self.log = tempfile.TemporaryFile(mode="w+")

    def start(self) -> ModelServer:
        arguments = [MLFLOW_COMMAND, "models", "serve", "-m", self.model_uri]
        arguments += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port), "-w", "1"]
        # With the environment's commands on PATH, as `./dev mlflow` runs it: the command starts
        # the scoring server as `uvicorn`, by name.
        path = f"{Path(MLFLOW_COMMAND).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        environment = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": self.tracking_uri}
        self._launch(arguments, environment)
        return self

    def __enter__(self) -> ModelServer:
        self.start().wait_until_healthy(SERVE_START_TIMEOUT)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        super().stop()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """What the server answers for `images`, sent as a consumer sends a tensor input."""
        request = urllib.request.Request(
            f"{self.url}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return np.asarray(json.load(response)["predictions"])
