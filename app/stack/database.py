"""The database of the stack's Prefect server: SQLite under the home (the default), or an
existing PostgreSQL server given by URL (`--database-url`), checked before the server starts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from app.stack.credentials import redact_url, scrub
from trainflow.errors import UserInputError, error_reason

CONNECT_TIMEOUT = 10
URL_SCHEMES = ("postgresql+asyncpg", "postgresql")  # the first is the one Prefect takes


def sqlite_url(home: Path) -> str:
    """Prefect's own default database: `prefect.db` in the home."""
    return f"sqlite+aiosqlite:///{home / 'prefect.db'}"


def check_database_url(url: str) -> str:
    """The URL of an existing PostgreSQL server in the form Prefect takes (postgresql+asyncpg),
    after connecting to it once; one line naming the problem when that fails."""
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES or not parts.hostname or not parts.path.strip("/"):
        raise UserInputError(
            f"--database-url {redact_url(url)}: expected "
            "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    url = parts._replace(scheme=URL_SCHEMES[0]).geturl()
    import asyncpg  # Prefect's PostgreSQL driver; imported only when a database is used

    try:
        asyncio.run(_connect_once(url))
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as error:
        reason = scrub(error_reason(error), parts.password)
        raise UserInputError(
            f"--database-url {redact_url(url)}: cannot connect ({reason}); check the server, "
            "user, password and database name"
        ) from None
    return url


async def _connect_once(url: str) -> None:
    import asyncpg

    dsn = url.replace(f"{URL_SCHEMES[0]}://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    await connection.close()
