"""Trained `RadarModule` checkpoints as archive predictors for `ni-infill` and `ni-nowcast`.

A checkpoint written by `ni-train` holds the network's weights and hyperparameters and
(`checkpoint_io.read_trained_model`) its task, the fitted normaliser and the auxiliary field
names, so it is self-contained for inference. The training crop size (the default tile) is
read from `datamodule_hyper_parameters` when present, else from the run's `config.yaml` that
`ni-train` writes beside `checkpoints/`; when found nowhere, `tile=` must be given.

The predictor encodes mm/h with the training normaliser (NaN -> mask 0, value 0),
regrids auxiliary fields with the DataModule's `AuxRegridder`, runs `predict_tiled`
over the full grid (tiles of the training crop size, `multiple = 2**depth`) and decodes
the network output to mm/h.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nowcast_infill.baselines import NothingToInfillFromError
from nowcast_infill.checkpoint_io import CheckpointError, TrainedModel, TrainedTask, read_trained_model
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.data.regrid import AuxRegridder
from nowcast_infill.data.tiling import predict_tiled
from nowcast_infill.io.files import file_sha256
from nowcast_infill.schema import AUX_PREFIX, PRECIP
from nowcast_infill.training.module import RadarModule

log = logging.getLogger(__name__)

STATS_FIX = "pass stats_path=<the .normalization.json used in training>"


def checkpoint_normalizer(trained: TrainedModel, stats_path: str | Path | None = None) -> Normalizer:
    """The normaliser the network was trained with (`stats_path` overrides it); CheckpointError when
    an old checkpoint holds none and no `stats_path` is given."""
    if stats_path:
        return Normalizer.load(stats_path)
    state = trained.normalizer_state
    if state is None:
        raise CheckpointError(
            f"{trained.path}: holds no normaliser state (neither 'nowcast_infill.normalizer' nor "
            f"the old 'RadarDataModule.normalizer'); {STATS_FIX}."
        )
    normalizer = Normalizer(state.get("kind", "log1p_scaled"))
    normalizer.load_state_dict(state)
    return normalizer


def _aux_names(n_aux: int, trained: TrainedModel, normalizer: Normalizer, given: Sequence[str] | None) -> list[str]:
    """The auxiliary fields the network was trained with, in channel order."""
    path = trained.path
    if n_aux == 0:
        if given:
            raise CheckpointError(
                f"{path}: the network takes no auxiliary fields, but aux={list(given)} was given; drop it."
            )
        return []
    if given:
        names = list(given)
    else:
        # An old checkpoint that does not list them: the normaliser was fitted on the training
        # aux list in channel order ("all" resolved).
        names = list(trained.aux_names) if trained.aux_names is not None else list(normalizer.aux)
    if len(names) != n_aux:
        raise CheckpointError(
            f"{path}: the network takes {n_aux} auxiliary field(s) but {names} were found for it; "
            f"pass aux=[name, ...] with the {n_aux} fields of training in their order."
        )
    missing = [n for n in names if n not in normalizer.aux]
    if missing:
        raise CheckpointError(
            f"{path}: the normaliser has no statistics for aux field(s) {missing}; "
            "pass stats_path= with the statistics used in training."
        )
    return names


def _aux_block_reader(aux_array, t: int) -> Callable[[slice, slice], np.ndarray]:
    """`read(aux_rows, aux_cols)` for `AuxRegridder.regrid`: the `(1, h_aux, w_aux)` block of
    time step `t` of `aux_array` (an xarray variable of the store, in its own units)."""
    return lambda aux_rows, aux_cols: aux_array[t : t + 1, aux_rows, aux_cols].values


class CheckpointPredictor:
    """A trained `RadarModule` applied to full grids of a store.

    Call as `predictor(x_mm_h, valid_coverage=None, *, frame_index=None)`:
    `x_mm_h (T_in, H, W)` float32 mm/h with NaN for missing, `frame_index (T_in,)` the
    store time indices of those frames (needed for auxiliary fields; indices outside the
    store mean "no aux data"). Returns the decoded network output `(T_out, H, W)` mm/h, >= 0.
    Infill: finite in the holes of the target frame inside `valid_coverage` (only the tiles
    holding such a pixel are computed; NaN elsewhere; compositing with observations is the
    writer's job), everywhere when `valid_coverage` is None. Nowcast: NaN where no past
    frame has data.

    `bind(ds, path)` must be called with the input store before a network with auxiliary
    inputs can be called.
    """

    wants_frame_index = True

    def __init__(
        self,
        module,
        normalizer,
        *,
        task: TrainedTask,
        tile: int,
        overlap: int,
        multiple: int,
        batch_size: int,
        aux_names: Sequence[str],
        device: str | torch.device,
        path: Path,
    ):
        self.module, self.normalizer = module, normalizer
        self.task = task.name
        self.in_frames, self.out_frames = task.in_frames, task.out_frames
        self.tile, self.overlap, self.multiple, self.batch_size = (
            int(tile),
            int(overlap),
            int(multiple),
            int(batch_size),
        )
        self.aux_names = list(aux_names)
        self.device = torch.device(device)
        self.path = Path(path)
        # (regridder, aux variables of the store by name, n_time, (height, width)) once bound
        self._aux: tuple[AuxRegridder, dict[str, Any], int, tuple[int, int]] | None = None

    # -- store binding -----------------------------------------------------------------
    def bind(self, ds, store_path: str | Path) -> None:
        """Prepare auxiliary regridding for store `ds` (opened from `store_path`)."""
        shape = ds[PRECIP].shape[1:]
        if min(shape) < 1:
            raise ValueError(f"{store_path}: empty grid {shape}.")
        if not self.aux_names:
            return
        missing = [AUX_PREFIX + n for n in self.aux_names if AUX_PREFIX + n not in ds]
        if missing:
            raise ValueError(
                f"{store_path}: the model {self.path.name} needs auxiliary variable(s) {', '.join(missing)} "
                f"(trained with aux={self.aux_names}), which the store lacks; add them (ni-convert/ni-synth with aux) "
                "or use a checkpoint trained without aux."
            )
        regridder = AuxRegridder(ds["y"].values, ds["x"].values, ds["y_aux"].values, ds["x_aux"].values)
        arrays = {n: ds[AUX_PREFIX + n] for n in self.aux_names}
        self._aux = (regridder, arrays, int(ds.sizes["time"]), shape)

    def _aux_inputs(self, frame_index: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Normalised aux `(T_in, A, H, W)` and its 0/1 mask on the radar grid, or (None, None)."""
        if not self.aux_names:
            return None, None
        if self._aux is None or frame_index is None:
            raise RuntimeError(f"{self.path.name} uses auxiliary fields: call bind(ds, path) and pass frame_index.")
        regridder, arrays, n_time, (height, width) = self._aux
        out = np.full((len(frame_index), len(self.aux_names), height, width), np.nan, dtype=np.float32)
        inside = [(i, int(t)) for i, t in enumerate(frame_index) if 0 <= int(t) < n_time]
        for a, name in enumerate(self.aux_names):
            arr = arrays[name]
            for i, t in inside:
                values = regridder.regrid(_aux_block_reader(arr, t), slice(0, height), slice(0, width))
                out[i, a] = self.normalizer.encode_aux(name, values[0])
        valid = np.isfinite(out)
        return torch.from_numpy(np.where(valid, out, 0.0).astype(np.float32)), torch.from_numpy(
            valid.astype(np.float32)
        )

    # -- prediction --------------------------------------------------------------------
    def _forward(self, x, x_mask, aux, aux_mask):
        return self.module.net(x, x_mask, aux, aux_mask)

    @torch.no_grad()
    def predict(
        self, x_mm_h: np.ndarray, frame_index: np.ndarray | None = None, needed: np.ndarray | None = None
    ) -> np.ndarray:
        """`(T_in, H, W)` mm/h with NaN -> `(T_out, H, W)` mm/h from the network alone.

        `needed (H, W)` bool limits the work to the tiles holding a needed pixel (NaN elsewhere).
        """
        x_mm_h = np.asarray(x_mm_h, dtype=np.float32)
        if x_mm_h.ndim != 3 or x_mm_h.shape[0] != self.in_frames:
            raise ValueError(
                f"{self.path.name}: input has shape {x_mm_h.shape}; the network takes "
                f"({self.in_frames}, H, W) frames in mm/h (task={self.task})."
            )
        valid = np.isfinite(x_mm_h)
        x = np.where(valid, self.normalizer.encode(np.nan_to_num(x_mm_h, nan=0.0)), 0.0).astype(np.float32)
        aux, aux_mask = self._aux_inputs(frame_index)
        device = self.device
        self.module.to(device).eval()
        pred = predict_tiled(
            self._forward,
            torch.from_numpy(x[:, None]).to(device),
            torch.from_numpy(valid[:, None].astype(np.float32)).to(device),
            None if aux is None else aux.to(device),
            None if aux_mask is None else aux_mask.to(device),
            tile=self.tile,
            overlap=self.overlap,
            multiple=self.multiple,
            batch_size=self.batch_size,
            needed=None if needed is None else torch.from_numpy(np.asarray(needed, dtype=bool)),
        )
        return self.normalizer.decode(pred[:, 0].float()).cpu().numpy().astype(np.float32)

    def __call__(
        self, x_mm_h: np.ndarray, valid_coverage: np.ndarray | None = None, *, frame_index: np.ndarray | None = None
    ) -> np.ndarray:
        if not np.isfinite(x_mm_h).any():
            if self.task == "infill":
                raise NothingToInfillFromError(
                    f"no observed pixel in the {self.in_frames} input frame(s), so {self.path.name} has nothing to infill from."
                )
            raise ValueError(
                f"{self.path.name}: all {self.in_frames} past frames are entirely missing; no nowcast "
                "can be issued from them; choose another issue_time."
            )
        needed = None
        if self.task == "infill" and valid_coverage is not None:
            # The writer takes the model only in the target frame's holes: compute just their tiles.
            needed = np.asarray(valid_coverage, dtype=bool) & ~np.isfinite(x_mm_h[self.in_frames // 2])
            if not needed.any():
                needed = None
        pred = self.predict(x_mm_h, frame_index, needed)
        if self.task == "nowcast":
            # Never observed in any past frame (outside the radar network, or a lasting outage):
            # the network would only extrapolate zeros there, so there is no forecast: NaN.
            pred[:, ~np.isfinite(x_mm_h).any(axis=0)] = np.nan
        return pred


def load_checkpoint_predictor(
    path: str | Path,
    task: str,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    stats_path: str | Path | None = None,
    aux: Sequence[str] | None = None,
) -> tuple[CheckpointPredictor, dict]:
    """`(predictor, info)` for a RadarModule checkpoint; `info = {"model", "sha256", "config"}`.

    Args:
        tile: tile edge in pixels; None = the training crop size (from the checkpoint or its
            run's config.yaml), rounded down to a multiple of `2**depth`.
        overlap: pixels shared by neighbouring tiles; None = tile // 4.
        device: `auto` (cuda when available), `cpu`, `cuda`, `cuda:1`, ...
        stats_path: normalisation statistics JSON overriding the checkpoint's normaliser.
        aux: auxiliary field names in channel order, when not recoverable from the training run.
    """
    shown, path = path, Path(path)  # messages name the file as the user wrote it
    if not path.is_file():
        raise FileNotFoundError(
            f"{shown}: checkpoint not found; pass ckpt_path=<run>/checkpoints/*.ckpt written by ni-train."
        )
    trained = read_trained_model(shown)
    hparams = trained.hyper_parameters
    if trained.task.name != task:
        raise CheckpointError(
            f"{shown}: the network was trained for task={trained.task.name!r}; ni-{task} needs a "
            f"task={task} checkpoint."
        )
    if "net" not in hparams or not hparams.get("net"):
        raise CheckpointError(
            f"{shown}: has no network (hyper_parameters.net); a baseline is run with model=<name>, not a checkpoint."
        )
    module = trained.load_module(RadarModule)
    module.eval()
    normalizer = checkpoint_normalizer(trained, stats_path)
    module.attach_normalizer(normalizer)
    # The floor buffer is saved with the weights; a stats override must not contradict it.
    if not np.isclose(float(module.net.output_floor), normalizer.floor):
        raise CheckpointError(
            f"{shown}: the network's output floor {float(module.net.output_floor):g} differs from the "
            f"normaliser's {normalizer.floor:g}; the statistics are not those of training (stats_path?)."
        )
    multiple = int(module.net.size_multiple)  # the network contract (models/network.py)
    if tile is None:
        setting = trained.data_setting("crop_size")
        if setting is None or setting[0] is None:
            raise CheckpointError(
                f"{shown}: the training crop size is not stored in the checkpoint and no run config.yaml was found "
                f"beside its folder (or it trained on whole frames); pass tile=<pixels, a multiple of {multiple}>."
            )
        tile = int(setting[0]) // multiple * multiple
        log.info("%s: tile %d px from the training crop size (%s)", path.name, tile, setting[1])
    tile = int(tile)
    if tile < multiple or tile % multiple:
        raise ValueError(f"tile={tile} must be a positive multiple of 2**depth = {multiple} for {path.name}.")
    overlap = tile // 4 if overlap is None else int(overlap)
    aux_names = _aux_names(int(hparams.get("aux_channels", 0)), trained, normalizer, aux)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = CheckpointPredictor(
        module,
        normalizer,
        task=trained.task,
        tile=tile,
        overlap=overlap,
        multiple=multiple,
        batch_size=batch_size,
        aux_names=aux_names,
        device=device,
        path=path,
    )
    config = {
        "hyper_parameters": hparams,
        "normalizer": normalizer.state_dict(),
        "aux": aux_names,
        "tile": tile,
        "overlap": overlap,
    }
    info = {
        "model": str(path.resolve()),
        "sha256": file_sha256(path),
        "config": json.dumps(config, sort_keys=True, default=str),
    }
    return predictor, info
