"""Helpers whose job is Prefect at run time: the retry policy, the artifacts a run publishes (keys,
progress, summary). The local server and stack are the application's (app/stack/)."""
