"""Inference on full grids: tiled prediction, archive infilling and nowcast products."""
