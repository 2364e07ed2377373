"""Classical nowcasting baselines: Eulerian persistence, Lagrangian extrapolation, S-PROG.

Every baseline is a callable `(x_mm_h, **ctx) -> (n_leads, H, W)` mm/h:

- `x_mm_h`: `(T_in, H, W)` float32 mm/h, past frames oldest first, NaN = no data.
- Outside rule (like pySTEPS' `outval`, but a forecast value, not a constant): a pixel
  whose departure point lies outside the domain or on no-data (rain advected in from
  outside the tile) takes the latest observation at that pixel, i.e. Eulerian
  persistence. So every method answers every pixel observed in the latest input frame
  and all are scored on the same pixels (`RadarModule.score_mask`); pixels not observed
  there stay NaN, never 0. `fill_outside=False` keeps the NaN (pure pySTEPS output).
- Fallback rule: a window pySTEPS cannot forecast (almost no rain or few valid pixels:
  Lucas–Kanade's "x contains non-finite values", S-PROG's nonstationary AR fit, a missing
  frame in S-PROG's window, fewer than 2 frames with data) gets Eulerian persistence
  instead of crashing the evaluation. Each such window adds 1 to the callable's
  `fallbacks` attribute, which `ni-eval` reports per method (`test/fallbacks`).

Extrapolation and S-PROG follow the pysteps recipe: motion by Lucas–Kanade on
dB-transformed rain (`10 log10 R`, rain below `threshold` mm/h set to the dB zero
value; non-finite pixels are masked so no features are tracked there), then
semi-Lagrangian advection.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from typing import Protocol, cast

import numpy as np

# pysteps prints its config path on import unless told otherwise.
os.environ.setdefault("PYSTEPS_CONFIG_SILENT", "1")

log = logging.getLogger(__name__)


class CountsFallbacks(Protocol):
    """A baseline callable's `fallbacks` counter (module docstring: the fallback rule); a
    function attribute, which mypy only sees through this protocol."""

    fallbacks: int


def _check_input(x_mm_h: np.ndarray, name: str, min_frames: int) -> np.ndarray:
    x = np.asarray(x_mm_h, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"{name}: x_mm_h has shape {x.shape}; expected (T_in, H, W) mm/h with NaN for missing.")
    if x.shape[0] < min_frames:
        raise ValueError(
            f"{name}: got {x.shape[0]} past frame(s) but it needs at least {min_frames}; "
            f"configure past >= {min_frames} frames."
        )
    return x


def _last_valid_index(x: np.ndarray, name: str) -> int:
    """Index of the latest frame with any finite pixel; error when all past frames are missing."""
    has_data = np.isfinite(x).any(axis=(1, 2))
    if not has_data.any():
        raise ValueError(f"{name}: all {x.shape[0]} past frames are entirely NaN (missing); nothing to forecast from.")
    return int(np.nonzero(has_data)[0][-1])


def make_persistence(n_leads: int) -> Callable:
    """Eulerian persistence: the latest non-missing frame repeated `n_leads` times (NaN stays NaN)."""
    _check_leads(n_leads)

    def persistence(x_mm_h: np.ndarray, **ctx) -> np.ndarray:
        """(T_in, H, W) mm/h -> (n_leads, H, W) mm/h."""
        x = _check_input(x_mm_h, "persistence", 1)
        last = x[_last_valid_index(x, "persistence")]
        return np.repeat(last[None], n_leads, axis=0)

    return persistence


# Errors pySTEPS (and our motion step) raise on windows they cannot forecast: LK on a nearly
# dry or nearly all-NaN field ("x contains non-finite values"), S-PROG's nonstationary AR fit,
# too few frames with data. Input-shape mistakes are checked before and still raise.
FORECAST_FAILURES = (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError, IndexError)


def _with_fallback(name: str, forecast: Callable, n_leads: int, fill_outside: bool, min_frames: int) -> Callable:
    """Wrap `forecast(x (T_in, H, W) float32 mm/h) -> (n_leads, H, W)` with the outside and fallback rules.

    The returned callable has a `fallbacks` attribute: the number of windows that got
    Eulerian persistence because `forecast` failed (see the module docstring).
    """

    def method(x_mm_h: np.ndarray, **ctx) -> np.ndarray:
        x = _check_input(x_mm_h, name, min_frames)
        has_data = np.isfinite(x).any(axis=(1, 2))
        if not has_data.any():
            # Nothing observed (a tile outside the radar range): no forecast anywhere, nothing scored.
            counted.fallbacks += 1
            return np.full((n_leads,) + x.shape[1:], np.nan, dtype=np.float32)
        last = x[int(np.nonzero(has_data)[0][-1])]
        try:
            out = np.asarray(forecast(x), dtype=np.float32)
        except FORECAST_FAILURES as err:
            counted.fallbacks += 1
            log.warning(
                "%s: %s: %s; Eulerian persistence for this window (counted in fallbacks).",
                name,
                type(err).__name__,
                err,
            )
            return np.repeat(last[None], n_leads, axis=0)
        return fill_from_outside(out, last) if fill_outside else out

    counted = cast(CountsFallbacks, method)
    counted.fallbacks = 0
    method.__name__ = name
    return method


def fill_from_outside(forecast_mm_h: np.ndarray, last_mm_h: np.ndarray) -> np.ndarray:
    """The outside rule (module docstring): a forecast pixel pySTEPS left NaN, rain advected in
    from outside, takes the last observation there (NaN where that is missing too).

    forecast_mm_h: (n_leads, H, W); last_mm_h: (H, W), the latest frame with data.
    """
    return np.where(np.isfinite(forecast_mm_h), forecast_mm_h, last_mm_h[None]).astype(np.float32)


def _check_leads(n_leads: int) -> None:
    if int(n_leads) != n_leads or n_leads < 1:
        raise ValueError(f"n_leads={n_leads!r}; it must be a positive integer (number of forecast frames).")


def to_db(x: np.ndarray, threshold: float, zerovalue_db: float) -> np.ndarray:
    """mm/h -> dBR (10 log10 R); rain below `threshold` -> `zerovalue_db`; NaN stays NaN."""
    out = np.full(x.shape, np.nan, dtype=np.float64)
    finite = np.isfinite(x)
    wet = finite & (x >= threshold)
    out[wet] = 10.0 * np.log10(x[wet])
    out[finite & ~wet] = zerovalue_db
    return out


def motion_field(x_db: np.ndarray, lk_options: dict) -> np.ndarray:
    """Lucas–Kanade motion (2, H, W) in pixels per time step from (T, H, W) dBR with NaN."""
    from pysteps import motion

    finite_frames = np.isfinite(x_db).any(axis=(1, 2))
    frames = x_db[finite_frames]
    if frames.shape[0] < 2:
        raise ValueError("extrapolation: needs at least 2 past frames with data to estimate motion.")
    # pysteps masks non-finite pixels (no features there); a masked array makes it explicit.
    masked = np.ma.masked_invalid(frames)
    return motion.get_method("LK")(masked, verbose=False, **lk_options)


def _advect(field: np.ndarray, velocity: np.ndarray, n_leads: int) -> np.ndarray:
    """Semi-Lagrangian advection of (H, W) for 1..n_leads steps; NaN where it came from outside/no-data."""
    from pysteps import extrapolation

    out = extrapolation.get_method("semilagrangian")(
        field, velocity, n_leads, allow_nonfinite_values=True, outval=np.nan
    )
    return np.asarray(out, dtype=np.float64)


def extrapolation_motion(
    x_mm_h: np.ndarray, threshold: float = 0.1, zerovalue_db: float = -15.0, lk_options: dict | None = None
) -> tuple[np.ndarray, int]:
    """The motion step of `extrapolation`: ((2, H, W) pixels per step, index of the frame to advect).

    x_mm_h: (T_in >= 2, H, W) mm/h with NaN. Shared with the network prior
    (nowcast_infill/data/priors.py), which caches its result per window.
    """
    x = _check_input(x_mm_h, "extrapolation", 2)
    velocity = motion_field(to_db(x, threshold, zerovalue_db), dict(lk_options or {}))
    return velocity, _last_valid_index(x, "extrapolation")


def advect(field_mm_h: np.ndarray, velocity: np.ndarray, n_leads: int) -> np.ndarray:
    """(H, W) mm/h advected by (2, H, W) for 1..n_leads steps -> (n_leads, H, W) float32, NaN from outside."""
    return _advect(np.asarray(field_mm_h, dtype=np.float64), velocity, n_leads).astype(np.float32)


def make_extrapolation(
    n_leads: int,
    threshold: float = 0.1,
    zerovalue_db: float = -15.0,
    lk_options: dict | None = None,
    fill_outside: bool = True,
) -> Callable:
    """Lagrangian persistence: LK motion on dBR, rain rate advected semi-Lagrangian (pysteps).

    Outside and fallback rules: see the module docstring.
    """
    _check_leads(n_leads)
    lk_options = dict(lk_options or {})

    def extrapolation(x: np.ndarray) -> np.ndarray:
        """(T_in >= 2, H, W) mm/h -> (n_leads, H, W) mm/h, NaN where advected from no-data."""
        velocity, last_index = extrapolation_motion(x, threshold, zerovalue_db, lk_options)
        return _advect(x[last_index].astype(np.float64), velocity, n_leads)

    return _with_fallback("extrapolation", extrapolation, n_leads, fill_outside, 2)


def make_sprog(
    n_leads: int,
    threshold: float = 0.1,
    zerovalue_db: float = -15.0,
    n_cascade_levels: int = 6,
    ar_order: int = 2,
    lk_options: dict | None = None,
    fill_outside: bool = True,
) -> Callable:
    """S-PROG (Seed 2003) via pysteps, in dBR, with LK motion; needs `ar_order + 1` past frames.

    No-data pixels are passed to pysteps as NaN (its S-PROG masks them and fills the
    cascade with the field minimum); the forecast is then set to NaN wherever the advected
    no-data mask of the last frame says there is no data, the same NaN pattern that
    `extrapolation` produces; the outside rule then fills it like extrapolation's. An
    entirely missing frame among the last `ar_order + 1` makes the AR fit meaningless: that
    window falls back to persistence (module docstring).
    """
    _check_leads(n_leads)
    if ar_order < 1:
        raise ValueError(f"sprog: ar_order={ar_order}; it must be >= 1.")
    lk_options = dict(lk_options or {})
    need = ar_order + 1

    def sprog(x: np.ndarray) -> np.ndarray:
        """(T_in >= ar_order + 1, H, W) mm/h -> (n_leads, H, W) mm/h."""
        from pysteps import nowcasts

        x_db = to_db(x, threshold, zerovalue_db)
        velocity = motion_field(x_db, lk_options)
        last = x[_last_valid_index(x, "sprog")].astype(np.float64)
        nodata = ~np.isfinite(_advect(np.where(np.isfinite(last), 0.0, np.nan), velocity, n_leads))
        recent = x_db[-need:]
        empty = [i for i in range(need) if not np.isfinite(recent[i]).any()]
        if empty:
            raise ValueError(
                f"sprog: past frame(s) {[x.shape[0] - need + i for i in empty]} of the last {need} are missing "
                f"(all NaN); S-PROG's AR({ar_order}) needs {need} consecutive frames with data. "
                "Use persistence/extrapolation for this window or issue the forecast at another time."
            )
        if np.all(recent[np.isfinite(recent)] <= zerovalue_db):
            # S-PROG's AR fit is undefined on an all-dry window; a dry field stays dry.
            forecast_db = np.full((n_leads,) + x.shape[1:], zerovalue_db)
        else:
            try:
                # pysteps' S-PROG prints a report on every call; keep it out of the logs.
                with contextlib.redirect_stdout(io.StringIO()):
                    forecast_db = nowcasts.get_method("sprog")(
                        recent,
                        velocity,
                        n_leads,
                        precip_thr=10.0 * np.log10(threshold),
                        n_cascade_levels=n_cascade_levels,
                        ar_order=ar_order,
                        extrap_kwargs={"allow_nonfinite_values": True},
                    )
            except RuntimeError as err:
                if "nonstationary" not in str(err):
                    raise
                # Lag correlations of 1 (a field that only translates) make the AR fit
                # nonstationary; S-PROG's limit for such a field is Lagrangian persistence.
                log.warning("sprog: %s; falling back to Lagrangian persistence for this window.", err)
                forecast_db = _advect(to_db(last, threshold, zerovalue_db), velocity, n_leads)
        forecast_db = np.asarray(forecast_db, dtype=np.float64)
        rain = np.where(forecast_db > zerovalue_db + 1e-6, 10.0 ** (forecast_db / 10.0), 0.0)
        rain[(rain < threshold)] = 0.0
        rain[nodata | ~np.isfinite(forecast_db)] = np.nan
        return rain.astype(np.float32)

    return _with_fallback("sprog", sprog, n_leads, fill_outside, need)
