"""cluster.yaml: model, loader and starter."""
