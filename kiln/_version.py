"""kiln's version: the one place it is written (pyproject.toml reads it, the manifest records it)."""

KILN_VERSION = "0.1.0"
