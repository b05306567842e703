"""Example model builders for `trainflow run --model examples.<module>:<function>`."""
