"""HTTP API of the collections service."""
