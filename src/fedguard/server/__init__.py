"""The orchestrator: HTTP API, rounds, aggregation, key store and storage."""
