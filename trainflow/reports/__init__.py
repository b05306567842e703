"""What a run reports: classification metrics, tables and pictures."""
