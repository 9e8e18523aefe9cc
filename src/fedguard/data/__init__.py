"""Dataset loaders, the feature schema, the synthetic generator and partitioning."""
