"""Inference on full grids: archive infilling and nowcast products from a classical method or a checkpoint.

Imports run one way (no cycle): `outputs` (input store, product attributes) <- `frame_infiller`
(one frame of an infill store) <- `archive` (the infill writer) and `distributed` (the same frames
over several processes); `checkpoint` (a trained network as a predictor) <- `predictors` (a
predictor by name); `nowcast_product` (the nowcast writer).
"""
