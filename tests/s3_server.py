"""A real S3-compatible server for the tests: moto's, on 127.0.0.1, in this process.

In this process (`ThreadedMotoServer`) rather than as a `moto_server` subprocess because moto
keeps its objects in the process's memory: `stop()` and `start()` on the same port then play a
store that goes away and comes back with its content, as a real one does after a restart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moto.server import ThreadedMotoServer

from app.stack.prefect_server import LOOPBACK, free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "trainflow-test-key",
    "AWS_SECRET_ACCESS_KEY": "trainflow-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    """moto's S3 server on a free loopback port, which can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def environment(self) -> dict[str, str]:
        """What a client of this server needs: the standard AWS variables."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def download(self, bucket: str, prefix: str, target: Path) -> Path:
        """Copy every object under `prefix` into `target` (keys relative to the prefix)."""
        client = self.client()
        for key in self.keys(bucket, prefix):
            path = target / key[len(prefix) :].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(path))
        return target


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@contextmanager
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def s3_environment(server: S3Server) -> Iterator[None]:
    """This process's environment pointed at `server` (for in-process library calls)."""
    saved = {key: os.environ.get(key) for key in server.environment}
    os.environ.update(server.environment)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
