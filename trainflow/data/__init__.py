"""Datasets: sources and their readers, validation, splitting, and the prepared-data cache."""
