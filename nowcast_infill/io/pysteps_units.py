"""A pySTEPS field in its unit and transform -> rain rate in mm/h.

pySTEPS describes a field by two metadata keys: `unit` is the physical quantity
(`mm/h` rate, `mm` depth over `accutime` minutes, `dBZ` reflectivity) and `transform`
the scale the values are in (`None` linear, `"dB"` 10*log10, `"log"`/`"BoxCox"`).
So `unit="dBZ", transform="dB"` (what fmi_pgm and odim_hdf5 DBZH return) holds dBZ,
and `unit="dBZ", transform=None` holds linear Z (mm^6 m^-3), exactly as
`pysteps.utils.conversion.to_rainrate` reads them. `dBR` (dB of a rain rate in mm/h,
used by some pySTEPS outputs) is accepted too. The inverse transforms set values
below the metadata `threshold` to 0 (no rain), as pySTEPS does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nowcast_infill.io.importers import (
    DBZ_TO_MM_H_DEFAULT_ZR,
    ConversionError,
    accumulation_to_mm_h,
    describe_accumulation,
)

# The transforms pySTEPS' `to_rainrate` undoes that are accepted here.
TRANSFORMS = (None, "dB", "log", "BoxCox")
UNITS = ("mm/h", "mm", "dBZ", "dBR")


def _inverse_transform(values: np.ndarray, transform, meta: dict) -> np.ndarray:
    """Linear values from `transform`-scaled ones; below the metadata threshold -> 0 (pySTEPS' rule)."""
    threshold = meta.get("threshold")
    threshold = -10.0 if threshold is None else float(threshold)  # pySTEPS' default
    if transform == "dB":
        forward = lambda v: np.power(10.0, v / 10.0)  # noqa: E731
    else:  # log = Box-Cox with lambda 0
        lam = float(meta.get("BoxCox_lambda") or 0.0)
        forward = np.exp if lam == 0.0 else (lambda v: np.exp(np.log(lam * v + 1.0) / lam))  # noqa: E731
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        linear = forward(values)
        linear[linear < forward(np.float64(threshold))] = 0.0  # NaN compares False: no-data stays NaN
    return linear


def field_to_mm_h(path: Path, values: np.ndarray, meta: dict, zr: tuple[float | None, float | None] = (None, None)):
    """Rain rate `(H, W)` float32 mm/h of a pySTEPS field and its metadata.

    values: `(H, W)` float64 as the importer returned it, NaN = no data.
    Returns (precip, accumulation_interval_s, conversion text, (zr_a, zr_b) or None).
    Raises ConversionError naming `path` for a unit/transform it cannot convert or when
    a value that was not no-data becomes non-finite.
    """
    unit = str(meta.get("unit", "")).strip()
    transform = meta.get("transform")
    transform = None if transform in (None, "None", "none", "") else str(transform)
    if unit not in UNITS:
        raise ConversionError(
            path,
            f"metadata unit {unit!r} is not one of {', '.join(UNITS)}; this field is not "
            "precipitation (or pysteps_importer= reads another quantity).",
        )
    if transform not in TRANSFORMS:
        raise ConversionError(
            path,
            f"metadata transform {transform!r} cannot be undone; only {', '.join(map(str, TRANSFORMS))} are supported.",
        )
    scale = "" if transform is None else f"{transform}-transformed "
    zr_used, interval_s = None, 0
    if unit == "dBR":
        # The unit itself is the dB scale of a rain rate; a dB transform only restates it.
        if transform not in (None, "dB"):
            raise ConversionError(
                path,
                f"metadata unit dBR with transform {transform!r} is contradictory "
                "(dBR is already a dB scale); fix the importer's metadata.",
            )
        precip = _inverse_transform(values, "dB", meta)
        conversion = "mm/h from dBR"
    else:
        linear = values if transform is None else _inverse_transform(values, transform, meta)
        if unit == "mm/h":
            precip = linear
            conversion = f"mm/h from {scale}mm/h" if scale else "mm/h as read"
        elif unit == "mm":
            accutime_min = float(meta.get("accutime") or 0)
            if accutime_min <= 0:
                raise ConversionError(
                    path,
                    "unit is mm but the metadata has no accutime; pass ++importer.importer_kwargs.accutime=MINUTES.",
                )
            interval_s = int(round(accutime_min * 60))
            precip = accumulation_to_mm_h(linear, interval_s)
            conversion = describe_accumulation(interval_s) + (f" from {scale}mm" if scale else "")
        else:  # dBZ: `linear` is Z in mm^6 m^-3
            a = zr[0] or float(meta.get("zr_a") or DBZ_TO_MM_H_DEFAULT_ZR[0])
            b = zr[1] or float(meta.get("zr_b") or DBZ_TO_MM_H_DEFAULT_ZR[1])
            zr_used = (a, b)
            with np.errstate(invalid="ignore"):
                precip = np.power(linear / a, 1.0 / b)
            source = "dBZ" if transform == "dB" else f"{scale}Z" if scale else "linear Z"
            conversion = f"Z={a:g}*R^{b:g} from {source}"
    precip = np.asarray(precip, dtype=np.float32)
    broken = ~np.isfinite(precip) & ~np.isnan(values)
    if broken.any():
        row, col = (int(i) for i in np.argwhere(broken)[0])
        raise ConversionError(
            path,
            f"{int(broken.sum())} pixel(s) are not finite after converting unit {unit} / transform {transform} to mm/h "
            f"(first at row {row}, column {col}: value {values[row, col]!r}); the metadata does not describe the values: "
            "check pysteps_importer= and importer.importer_kwargs (unit, accutime, zr), or pass skip_bad=true.",
        )
    return precip, interval_s, conversion, zr_used


# ---------------------------------------------------------------------------- importer
