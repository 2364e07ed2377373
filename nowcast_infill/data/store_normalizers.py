"""The normaliser(s) of a RadarDataModule's stores: given, loaded from a statistics file, or fitted.

One normaliser serves every store (default), or each store has its own
(`data.normalize_per_store=true` with several stores). The normaliser comes from, in this
order: `use` (e.g. a checkpoint's: nothing is fitted, read or written), the statistics file
`stats_path` when it records exactly the frames this run would fit on, else a fit on the train
frames (from the stored per-frame moments, no precipitation read), then saved to `stats_path`
with that record. Datasets hold these Normalizer objects, so restoring a state updates them in place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from nowcast_infill import schema
from nowcast_infill.data.normalization import Normalizer, RunningMoments
from nowcast_infill.data.splits import TEST_ONLY
from nowcast_infill.data.store_windows import StoreWindows
from nowcast_infill.errors import BadValueError

log = logging.getLogger(__name__)

# Aux fields are fitted on at most this many train frames per store (a seeded sample): bounded start-up.
AUX_FIT_FRAMES = 256


class StoreNormalizers:
    """The normaliser of each of `n_stores` stores (all the same object unless `per_store`)."""

    def __init__(
        self, kind: str, n_stores: int, *, per_store: bool, stats_path: Path | None, max_rain_rate_mm_h: float
    ):
        self.kind = kind
        self.stats_path, self.max_rain_rate_mm_h = stats_path, float(max_rain_rate_mm_h)
        # With one store a per-store normaliser is the shared one: state_dict then writes "normalizer".
        self.per_store = bool(per_store) and n_stores > 1
        self.shared = Normalizer(kind)
        self.each = [self.shared] + [Normalizer(kind) if self.per_store else self.shared for _ in range(n_stores - 1)]
        self.given = False

    def use(self, state: Mapping[str, Any]) -> None:
        """Normalise every store with the normaliser of `state` (setup then fits and reads nothing)."""
        for own in dict.fromkeys(self.each):
            own.load_state_dict(state)
        self.given = True

    def state_dict(self) -> dict[str, Any]:
        if not self.shared.fitted:
            return {}
        if self.per_store:
            return {"normalizers": [n.state_dict() for n in self.each]}
        return {"normalizer": self.shared.state_dict()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the state of `state_dict` (see `state_dict`); a per-store list must match this
        run's stores one to one, or it raises BadValueError naming the key to fix."""
        if "normalizer" in state_dict:
            self.use(state_dict["normalizer"])
        if "normalizers" not in state_dict:
            return
        states = list(state_dict["normalizers"])
        if not self.per_store:
            raise BadValueError(
                f"the checkpoint holds {len(states)} per-store normalisers (trained with data.normalize_per_store=true) "
                f"but this run has one normaliser for {len(self.each)} store(s); set data.normalize_per_store=true "
                "and data.stores to the stores the model was trained on."
            )
        if len(states) != len(self.each):
            raise BadValueError(
                f"the checkpoint holds {len(states)} per-store normalisers but data.stores lists {len(self.each)} "
                "stores; set data.stores to the stores the model was trained on, in the same order."
            )
        for own, state in zip(self.each, states, strict=True):
            own.load_state_dict(state)
        self.given = True

    def prepare(
        self, plans: Sequence[StoreWindows], *, aux_names: Sequence[str], seed: int, test_only: bool, rank: int
    ) -> None:
        """Make every normaliser ready for `plans` (see the module docstring for the order); only
        `rank` 0 writes the statistics file."""
        if self.given:
            log.info("normalisation given (use_normalizer), no statistics fitted or read: %s", self.shared)
        elif self.per_store:
            if self.stats_path is not None:
                log.info(
                    "data.normalize_per_store: each store's normaliser is fitted on its own train frames every "
                    "run; data.stats_path=%s is not used",
                    self.stats_path,
                )
            for plan, normalizer in zip(plans, self.each, strict=True):
                fit_normalizer(normalizer, [plan], aux_names=aux_names, seed=seed)
        else:
            fitted_on = {
                "stores": [plan.fit_record(plan.fit_frames()) for plan in plans],
                "max_rain_rate_mm_h": self.max_rain_rate_mm_h,
            }
            if not self._load_recorded(fitted_on, aux_names):
                if test_only:
                    log.warning(
                        "data.split=%s: the normalisation is fitted on the test frames (a network must bring its "
                        "own, e.g. the checkpoint's via use_normalizer)",
                        TEST_ONLY,
                    )
                fit_normalizer(self.shared, plans, aux_names=aux_names, seed=seed)
                self.shared.fitted_on = fitted_on
                if self.stats_path is not None and rank == 0:
                    self.shared.save(self.stats_path)
        for normalizer in dict.fromkeys(self.each):
            missing_aux = [a for a in aux_names if a not in normalizer.aux]
            if missing_aux:
                raise BadValueError(
                    f"the given normaliser (use_normalizer) lacks aux field(s) {missing_aux}; use "
                    "the data.aux the model was trained with."
                )

    def _load_recorded(self, fitted_on: dict[str, Any], aux_names: Sequence[str]) -> bool:
        """Load the statistics file when it records exactly the fit frames `fitted_on` (and has
        sound statistics of every aux field); False when it is absent or must be refitted."""
        stats_path = self.stats_path
        if stats_path is None or not stats_path.exists():
            return False
        loaded = Normalizer.load(stats_path)
        if loaded.kind != self.kind:
            raise BadValueError(
                f"{stats_path}: statistics are for normalization={loaded.kind!r}, "
                f"config asks {self.kind!r}; delete the file to refit or fix data.normalization."
            )
        missing_aux = [a for a in aux_names if a not in loaded.aux]
        # Files written before 2026-11-30 gave every aux field the last field's statistics
        # (aux_t in K then reached the network as z ~ 100 and silenced its output).
        shared_aux = loaded.aux_fields_sharing_stats()
        if loaded.fitted_on == fitted_on and not missing_aux and not shared_aux:
            self.shared.load_state_dict(loaded.state_dict())
            self.shared.fitted_on = fitted_on
            log.info("normalisation statistics loaded from %s", stats_path)
            return True
        reason = (
            f"give aux fields {shared_aux} identical statistics (fitted on one field)"
            if shared_aux
            else f"lack aux field(s) {missing_aux}"
            if loaded.fitted_on == fitted_on
            else "record no fit frames"
            if loaded.fitted_on is None
            else f"were fitted on {loaded.fitted_on}, this run fits on {fitted_on}"
        )
        log.warning("normalisation statistics %s %s: refitting and overwriting them", stats_path, reason)
        return False


def fit_normalizer(
    normalizer: Normalizer, plans: Sequence[StoreWindows], *, aux_names: Sequence[str], seed: int
) -> Normalizer:
    """Fit `normalizer` on the fit frames of `plans` from their stored log1p moments (no precip read),
    merged over the stores; aux fields on up to AUX_FIT_FRAMES of those frames per store (a
    sample seeded by `seed`: bounded cost)."""
    moments = [plan.stats.log1p_moments(plan.fit_frames()) for plan in plans]
    if len(moments) > 1:
        merged = RunningMoments()
        for count, mean, m2 in moments:
            merged.merge(count, mean, m2)
        moments = [(merged.count, merged.mean, merged.m2)]

    def aux_values(plan: StoreWindows, name: str):
        frames = plan.fit_frames()
        if frames.size > AUX_FIT_FRAMES:
            frames = np.sort(np.random.default_rng(seed).choice(frames, AUX_FIT_FRAMES, replace=False))
        return (np.asarray(plan.handle[schema.AUX_PREFIX + name][int(t)], np.float32) for t in frames)

    def field_values(name: str):
        # A function call binds `name` now: a generator written inside the dict comprehension would
        # read the loop variable only when consumed, after the loop, and fit every field on the last.
        return chain.from_iterable(aux_values(plan, name) for plan in plans)

    aux = {a: field_values(a) for a in aux_names}
    normalizer.fit_moments(*moments[0], aux=aux)
    log.info(
        "normalisation fitted on %s (stored per-frame moments): %s",
        ", ".join(f"{p.path} frames {p.fit_frames()[0]}..{p.fit_frames()[-1]}" for p in plans),
        normalizer,
    )
    return normalizer
