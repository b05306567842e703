"""Where artifacts live, behind one interface: `trainflow.storage.artifacts.Storage`.

Everything else in this package is the interface's own (the import-linter contract "One storage
interface" keeps callers out of it), except `digests` and `locations`, which anyone may use.
"""
