"""The local stack behind `trainflow stack up|down`, and the Prefect server `trainflow run` starts
for itself: the server process (`prefect_server.py`), its database (`database.py`: SQLite or an
existing PostgreSQL server; `postgres.py`: a local PostgreSQL cluster), the secrets
(`credentials.py`), the process workers (`workers.py`), stopping process groups (`processes.py`),
and bringing all of it up and down (`lifecycle.py`). Only the application, the tests and the
benchmarks use it; flows and stages never do."""
