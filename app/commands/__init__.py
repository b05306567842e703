"""The `trainflow` subcommands, one a module: each declares its subparsers (`add_to(subcommands,
common)`) next to the function that runs them, which takes the parsed arguments and returns the
exit status. `app/cli.py` lists the modules.

Imports stay inside the command functions: `trainflow --help` must answer without importing
TensorFlow or Prefect.
"""

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1
