"""The application: the `trainflow` command line, the crash demo, re-evaluation, the local stack."""
