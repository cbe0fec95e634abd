"""The special search parameter ``near`` (Location, location.html#positional, search.html#special).

``near=[latitude]|[longitude]|[distance]|[units]`` (WGS84 degrees) matches a Location whose
``position`` lies within ``distance`` of the point, measured along the great circle (haversine on
the mean Earth radius). Units are km when omitted; m, km, ``[mi_i]``/``mi`` (international mile) and
``[nmi_i]`` (nautical mile) are understood. Without a distance the spec leaves "near" to the server:
this server uses :data:`DEFAULT_NEAR_KM`.

Index: ``idx_geo`` (latitude, longitude) per Location.position. Search: a bounding box around the
point (latitude range, then one or two longitude ranges when it crosses the antimeridian, the whole
circle of longitude when it reaches a pole) selects candidates from the btree, and the exact distance
is computed on those only: in SQL on PostgreSQL, with a Python function registered on the
connection on SQLite (storage/sqlfunctions.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, exists, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..errors import BadRequest
from ..storage.sqlfunctions import EARTH_RADIUS_KM, GREAT_CIRCLE_KM
from ..storage.tables import idx_geo
from .extract import compile_expression
from .model import SearchParam

Row = dict[str, Any]
Cond = ColumnElement[bool]

DEFAULT_NEAR_KM = 5.0
UNITS_KM: dict[str, float] = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344, "mi": 1.609344, "[nmi_i]": 1.852}
ROW_COLUMNS: tuple[str, ...] = ("param", "latitude", "longitude")
_SLACK_DEGREES = 1e-9  # the box must contain every point the exact test accepts, rounding included


def is_supported(param: SearchParam) -> bool:
    """``near`` with an expression is the special parameter implemented here; others are not."""
    return param.type == "special" and param.code == "near" and bool(param.expression)


# -- index rows --------------------------------------------------------------------------------------

class GeoIndexer:
    """``rows(resource_type, resource)``: the ``idx_geo`` rows (one per valid position)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._steps: dict[str, tuple[tuple[str, Any], ...]] = {}

    def rows(self, resource_type: str, resource: dict[str, Any]) -> list[Row]:
        steps = self._steps.get(resource_type)
        if steps is None:
            steps = self._steps[resource_type] = tuple(
                (code, compile_expression(resource_type, p.expression))
                for code, p in sorted(self.registry.params_for(resource_type).items()) if is_supported(p))
        out: list[Row] = []
        for code, extract in steps:
            for _t, position in extract(resource):
                point = _position(position)
                if point is not None:
                    out.append({"param": code, "latitude": point[0], "longitude": point[1]})
        return out


def _position(value: Any) -> tuple[float, float] | None:
    """Location.position latitude/longitude (decimals, WGS84) if both present and in range."""
    if type(value) is not dict:
        return None
    lat, lon = value.get("latitude"), value.get("longitude")
    if isinstance(lat, bool) or isinstance(lon, bool) or not isinstance(lat, (int, float, Decimal)) \
            or not isinstance(lon, (int, float, Decimal)):
        return None
    lat, lon = float(lat), float(lon)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return lat, lon


# -- parsing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NearValue:
    """A point and a radius in km."""

    latitude: float
    longitude: float
    km: float


def parse_near(full: str, param: SearchParam, mod: str | None, value: str) -> Any:
    """``near[:missing]=lat|lon[|distance[|units]]``, commas OR (search.html#combining). Anything
    malformed — a coordinate out of range, a negative or non-numeric distance, unknown units — is a
    400 naming the parameter."""
    from .parse import Criterion, _parse_missing, split_unescaped, unescape

    if mod == "missing":
        return Criterion(full, param, mod, (_parse_missing(full, value),))
    if mod is not None:
        raise BadRequest(f"Modifier ':{mod}' is not supported for '{param.code}' (only :missing)", expression=full)
    values = []
    for piece in split_unescaped(value, ","):
        if piece == "":
            continue
        parts = [unescape(p).strip() for p in split_unescaped(piece, "|")]
        if len(parts) < 2 or len(parts) > 4:
            raise BadRequest(f"'{full}' takes latitude|longitude|distance|units, not '{piece}'", expression=full)
        lat = _number(full, "latitude", parts[0], -90.0, 90.0)
        lon = _number(full, "longitude", parts[1], -180.0, 180.0)
        units = parts[3] if len(parts) == 4 and parts[3] else "km"
        if units not in UNITS_KM:
            raise BadRequest(f"Unknown distance units '{units}' in '{full}' (use one of {', '.join(UNITS_KM)})",
                             expression=full)
        if len(parts) >= 3 and parts[2]:
            km = _number(full, "distance", parts[2], 0.0, math.inf) * UNITS_KM[units]
        else:
            km = DEFAULT_NEAR_KM
        values.append(NearValue(lat, lon, km))
    if not values:
        raise BadRequest(f"No value for '{full}'", expression=full)
    return Criterion(full, param, None, tuple(values))


def _number(full: str, what: str, text: str, low: float, high: float) -> float:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise BadRequest(f"Invalid {what} '{text}' in '{full}'", expression=full) from None
    if not number.is_finite() or not (low <= float(number) <= high):
        raise BadRequest(f"{what.capitalize()} '{text}' in '{full}' is out of range", expression=full)
    return float(number)


# -- SQL -----------------------------------------------------------------------------------------------

class great_circle_km(FunctionElement[float]):
    """``great_circle_km(lat1, lon1, lat2, lon2)``: haversine distance in km, rendered per dialect."""

    type = Float()
    name = "great_circle_km"
    inherit_cache = True


@compiles(great_circle_km)
def _great_circle_sql(element: great_circle_km, compiler: Any, **kw: Any) -> str:
    lat1, lon1, lat2, lon2 = (compiler.process(arg, **kw) for arg in element.clauses)
    h = (f"power(sin(radians(({lat2}) - ({lat1})) / 2), 2) + cos(radians({lat1})) * cos(radians({lat2})) "
         f"* power(sin(radians(({lon2}) - ({lon1})) / 2), 2)")
    return f"(2 * {EARTH_RADIUS_KM!r} * asin(least(1.0, sqrt({h}))))"


@compiles(great_circle_km, "sqlite")
def _great_circle_sqlite(element: great_circle_km, compiler: Any, **kw: Any) -> str:
    return f"{GREAT_CIRCLE_KM}({compiler.process(element.clauses, **kw)})"


def bounding_box(lat: float, lon: float, km: float) -> tuple[float, float, list[tuple[float, float]]]:
    """(lat_min, lat_max, longitude ranges) containing every point within ``km`` of (lat, lon)
    (the spherical bounding box: Δlon = asin(sin δ / cos φ))."""
    delta = km / EARTH_RADIUS_KM
    if delta >= math.pi:
        return -90.0, 90.0, [(-180.0, 180.0)]
    d_lat = math.degrees(delta)
    lat_min, lat_max = lat - d_lat - _SLACK_DEGREES, lat + d_lat + _SLACK_DEGREES
    if lat_min <= -90.0 or lat_max >= 90.0:  # the circle contains a pole: every longitude
        return max(lat_min, -90.0), min(lat_max, 90.0), [(-180.0, 180.0)]
    ratio = math.sin(delta) / math.cos(math.radians(lat))
    if ratio >= 1.0:
        return lat_min, lat_max, [(-180.0, 180.0)]
    d_lon = math.degrees(math.asin(ratio)) + _SLACK_DEGREES
    lon_min, lon_max = lon - d_lon, lon + d_lon
    if lon_min < -180.0:
        return lat_min, lat_max, [(lon_min + 360.0, 180.0), (-180.0, lon_max)]
    if lon_max > 180.0:
        return lat_min, lat_max, [(lon_min, 180.0), (-180.0, lon_max - 360.0)]
    return lat_min, lat_max, [(lon_min, lon_max)]


def near_clause(res: Any, rtype: str | None, crit: Any) -> Cond:
    """``res`` has a position within the distance of one of the points (or, for ``:missing``, has
    none / some)."""
    g = idx_geo.alias()
    where: list[Cond] = [g.c.param == crit.param.code]
    if crit.modifier == "missing":
        present = _in(res, rtype, g, where)
        return ~present if crit.values[0].missing else present
    matches = []
    for v in crit.values:
        lat_min, lat_max, lon_ranges = bounding_box(v.latitude, v.longitude, v.km)
        matches.append(and_(
            g.c.latitude >= lat_min, g.c.latitude <= lat_max,
            or_(*(and_(g.c.longitude >= lo, g.c.longitude <= hi) for lo, hi in lon_ranges)),
            great_circle_km(literal(v.latitude, Float), literal(v.longitude, Float), g.c.latitude, g.c.longitude)
            <= v.km))
    where.append(or_(*matches))
    return _in(res, rtype, g, where)


def _in(res: Any, rtype: str | None, g: Any, where: list[Cond]) -> Cond:
    if rtype:
        return res.c.pk.in_(select(g.c.resource_pk).where(g.c.res_type == literal(rtype), *where))
    return exists().where(g.c.resource_pk == res.c.pk, g.c.res_type == res.c.res_type, *where)
