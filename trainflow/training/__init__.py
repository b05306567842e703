"""The training engine: model builders, the input pipeline, the resumable fit session, scoring."""
