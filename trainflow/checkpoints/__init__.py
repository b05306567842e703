"""Resume checkpoints: the state they record, their file layout, the writer, the store."""
