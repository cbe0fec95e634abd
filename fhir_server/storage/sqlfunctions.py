"""SQL functions SQLite lacks, registered on each SQLite connection (storage/db.py).

PostgreSQL computes the same things in SQL (search/geo.py renders the expression per dialect).
"""
from __future__ import annotations

import math

# Mean Earth radius (IUGG R1), km: the sphere the great-circle distance is measured on.
EARTH_RADIUS_KM = 6371.0088
GREAT_CIRCLE_KM = "fhir_great_circle_km"


def great_circle_km(lat1: float | None, lon1: float | None, lat2: float | None, lon2: float | None) -> float | None:
    """Haversine great-circle distance in km between two WGS84 points in degrees (NULL in, NULL out)."""
    if lat1 is None or lon1 is None or lat2 is None or lon2 is None:
        return None
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def register_sqlite_functions(dbapi_connection: object) -> None:
    dbapi_connection.create_function(GREAT_CIRCLE_KM, 4, great_circle_km, deterministic=True)  # type: ignore[attr-defined]
