"""search/geo.py and storage/sqlfunctions.py without a database: the distance and the bounding box."""
from __future__ import annotations

import math
import random

import pytest

from fhir_server.search.geo import bounding_box
from fhir_server.storage.sqlfunctions import great_circle_km


def test_great_circle_distance_known_values() -> None:
    # London (51.5074, -0.1278) to Paris (48.8566, 2.3522): 343.5 km on the mean-radius sphere.
    assert great_circle_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.5, abs=0.5)
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088)  # half the equator
    assert great_circle_km(10, 20, 10, 20) == 0
    assert great_circle_km(None, 0, 0, 0) is None


def _inside(lat: float, lon: float, box: tuple[float, float, list[tuple[float, float]]]) -> bool:
    lat_min, lat_max, ranges = box
    return lat_min <= lat <= lat_max and any(lo <= lon <= hi for lo, hi in ranges)


def test_bounding_box_contains_every_point_within_the_distance() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        lat, lon = rng.uniform(-89.9, 89.9), rng.uniform(-180, 180)
        km = rng.choice([0.5, 5, 50, 500, 3000])
        box = bounding_box(lat, lon, km)
        for _ in range(10):
            plat, plon = rng.uniform(-90, 90), rng.uniform(-180, 180)
            # points near the centre too, across the antimeridian when it is close
            if rng.random() < 0.7:
                plat = max(-90.0, min(90.0, lat + rng.uniform(-1, 1) * km / 111))
                plon = (lon + rng.uniform(-1, 1) * km / 111 / max(0.01, math.cos(math.radians(plat))) + 180) % 360 - 180
            if great_circle_km(lat, lon, plat, plon) <= km:
                assert _inside(plat, plon, box), (lat, lon, km, plat, plon, box)


def test_bounding_box_wraps_and_opens_at_the_poles() -> None:
    _, _, ranges = bounding_box(-17.0, 179.95, 16)
    assert len(ranges) == 2 and ranges[1][0] == -180.0
    assert bounding_box(89.99, 45.0, 5)[2] == [(-180.0, 180.0)]
    assert bounding_box(0, 0, 30000) == (-90.0, 90.0, [(-180.0, 180.0)])
