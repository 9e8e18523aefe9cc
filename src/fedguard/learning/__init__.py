"""Models, local training, federated averaging and metrics (no I/O)."""
