"""The wasmhive daemon: HTTP API, registry, metrics."""
