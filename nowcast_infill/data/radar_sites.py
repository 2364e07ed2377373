"""The DWD weather-radar network: site codes, names and WGS84 positions.

Coordinates are the published antenna positions of the DWD C-band network
(DWD "Radarverbund" site list; the same values are used by the ODIM/BALTRAD
site tables, e.g. `deboo`, `deess`), rounded to 1e-4 degrees, i.e. ~10 m, far
below the 1 km RADOLAN pixel. The 17 codes in `RADOLAN_HEADER_SITES` are the ones
listed in the `MS` field of the RADOLAN YW headers in ../shared/data (2017); DWD
later replaced Emden (`emd`) by the ASR Borkum site (`asb`), so both are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# The RADOLAN projection string is defined once, by the RADOLAN importer, so that
# synthetic and converted stores carry the identical `crs.proj4`.
from nowcast_infill.io.radolan import RADOLAN_PROJ4  # noqa: E402,F401

# Lower-left corner (km) of the 900 x 900 national RADOLAN grid in RADOLAN_PROJ4;
# wradlib.georef.get_radolan_grid(900, 900)[0, 0] gives the same point.
RADOLAN_GRID_ORIGIN_KM = (-523.4621669218558, -4658.644724265572)

# Mean earth radius for great-circle distances (km); the choice changes a 150 km
# radius by < 0.2 km against any ellipsoid radius.
EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class RadarSite:
    """One radar: 3-letter DWD code, place name, antenna position (degrees WGS84)."""

    code: str
    name: str
    lat: float
    lon: float


DWD_RADAR_SITES: dict[str, RadarSite] = {
    s.code: s
    for s in (
        RadarSite("asb", "Borkum (ASR)", 53.5640, 6.7482),
        RadarSite("boo", "Boostedt", 54.0043, 10.0468),
        RadarSite("drs", "Dresden", 51.1246, 13.7686),
        RadarSite("eis", "Eisberg", 49.5407, 12.4028),
        RadarSite("emd", "Emden", 53.3387, 7.0237),
        RadarSite("ess", "Essen", 51.4055, 6.9669),
        RadarSite("fbg", "Feldberg", 47.8736, 8.0039),
        RadarSite("fld", "Flechtdorf", 51.3112, 8.8020),
        RadarSite("hnr", "Hannover", 52.4600, 9.6945),
        RadarSite("isn", "Isen", 48.1747, 12.1017),
        RadarSite("mem", "Memmingen", 48.0421, 10.2192),
        RadarSite("neu", "Neuhaus", 50.5001, 11.1351),
        RadarSite("nhb", "Neuheilenbach", 50.1097, 6.5483),
        RadarSite("oft", "Offenthal", 49.9847, 8.7129),
        RadarSite("pro", "Prötzel", 52.6486, 13.8580),
        RadarSite("ros", "Rostock", 54.1757, 12.0580),
        RadarSite("tur", "Türkheim", 48.5853, 9.7828),
        RadarSite("umd", "Ummendorf", 52.1601, 11.1761),
    )
}

# Order as in the RADOLAN header `MS` field of the 2017 YW files.
RADOLAN_HEADER_SITES: tuple[str, ...] = (
    "boo", "ros", "emd", "hnr", "umd", "pro", "ess", "fld", "drs",
    "neu", "nhb", "oft", "eis", "tur", "isn", "fbg", "mem",
)  # fmt: skip


def sites_from_codes(codes: Iterable[str] | None = None) -> list[RadarSite]:
    """The RadarSite for each code (case-insensitive), in the given order.

    `None` means every site in DWD_RADAR_SITES. An unknown code raises ValueError
    listing the valid codes.
    """
    if codes is None:
        return list(DWD_RADAR_SITES.values())
    if isinstance(codes, str):
        codes = [codes]
    sites = []
    unknown = []
    for code in codes:
        key = str(code).strip().lower()
        if key in DWD_RADAR_SITES:
            sites.append(DWD_RADAR_SITES[key])
        else:
            unknown.append(code)
    if unknown:
        raise ValueError(
            f"unknown DWD radar site code(s) {unknown}; valid codes are "
            f"{', '.join(sorted(DWD_RADAR_SITES))} (see nowcast_infill/data/radar_sites.py)."
        )
    if not sites:
        raise ValueError("empty list of radar site codes; give at least one code or null for all DWD sites.")
    return sites


def great_circle_km(lat: np.ndarray, lon: np.ndarray, lat0: float, lon0: float) -> np.ndarray:
    """Great-circle distance (km) from (lat0, lon0) to every point of `lat`, `lon` (degrees, any shape).

    Haversine formula on a sphere of radius EARTH_RADIUS_KM; float64 result.
    """
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    phi0 = np.radians(lat0)
    dlam = np.radians(np.asarray(lon, dtype=np.float64) - lon0)
    h = np.sin((phi - phi0) / 2) ** 2 + np.cos(phi) * np.cos(phi0) * np.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def coverage_mask(lat: np.ndarray, lon: np.ndarray, sites: Iterable[RadarSite], radius_km: float) -> np.ndarray:
    """Boolean `lat.shape` array, True within `radius_km` of any of `sites`."""
    covered = np.zeros(np.shape(lat), dtype=bool)
    for site in sites:
        covered |= great_circle_km(lat, lon, site.lat, site.lon) <= radius_km
    return covered
