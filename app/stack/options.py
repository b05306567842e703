"""`StackOptions`: how `trainflow stack up` builds the stack. Each field is one option of the
command, its description and default the option's help (app/options.py derives them), and the
model checks them: at least one worker, and one database."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.stack.prefect_server import LOOPBACK


class StackOptions(BaseModel):
    """How `stack up` builds the stack: where it listens, its database, workers, credentials."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int = Field(4200, description="server port")
    host: str = Field(
        LOOPBACK,
        description="address the server listens on",
        json_schema_extra={
            "default_help": f"{LOOPBACK}, this machine only; any other, such as 0.0.0.0, opens it "
            "to the network and turns on --auth"
        },
    )
    ui_host: str | None = Field(
        None,
        description="address browsers reach the server at, for its UI",
        json_schema_extra={
            "default_help": "--host, or this machine's address when --host is 0.0.0.0 or ::"
        },
    )
    workers: int = Field(
        1,
        ge=1,
        description="process workers to start, each with its own directory under the home",
    )
    postgres: bool = Field(
        False,
        description="run the server on a local PostgreSQL cluster under the home, started and "
        "stopped with the stack (default: SQLite)",
    )
    database_url: str | None = Field(
        None,
        description="run the server on an existing PostgreSQL server: "
        "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE",
        json_schema_extra={"default_help": ""},  # --postgres says what the default is
    )
    auth: bool = Field(
        False, description="require Prefect basic auth (the secret in HOME/auth) even on 127.0.0.1"
    )
    mlflow: bool = Field(
        False,
        description="also start an MLflow tracking server (its database and artifacts under the "
        "home), which the workers' runs log to",
    )
    mlflow_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="port of the MLflow tracking server",
        json_schema_extra={"default_help": "a free one"},
    )

    @field_validator("database_url")
    @classmethod
    def _one_database(cls, url: str | None, info: ValidationInfo) -> str | None:
        """A local cluster (--postgres) or an existing server, not both."""
        if url is not None and info.data.get("postgres"):
            raise ValueError("not allowed with --postgres (one or the other)")
        return url
