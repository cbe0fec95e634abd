"""A Subscription resource (Subscriptions R5 Backport IG, profile backport-subscription) read into
what the server needs, with every rule checked: :func:`parse_subscription` is pure.

The R4 shape (StructureDefinition-backport-subscription.html):

- ``criteria``: the topic's canonical URL; ``criteria.extension`` ``backport-filter-criteria``
  (valueString ``Flag?patient=Patient/1`` or ``patient=Patient/1``), ANDed.
- ``channel.type`` ``rest-hook`` with ``channel.endpoint`` and ``channel.header`` ("Name: value",
  sent with every notification: the subscriber's own authentication).
- ``channel.payload`` a FHIR JSON MIME type, with extension ``backport-payload-content``:
  ``empty`` | ``id-only`` | ``full-resource``.
- ``channel.extension``: ``backport-heartbeat-period``, ``backport-timeout``, ``backport-max-count``.
- Our extension ``https://w3id.org/sg-fhir/StructureDefinition/subscription-signing-secret`` on
  ``channel`` (valueString): the HMAC key. It is write-only: the server moves it out of the
  resource into its own table and never serves it.

A classic R4 Subscription (subscription.html) is read too: ``criteria`` a search (``Observation?code=…``)
rather than a topic URL, ``channel.payload`` absent (a ping: POST with no body) or a FHIR JSON MIME
type (the resource, PUT to ``[endpoint]/[type]/[id]``), ``channel.header`` sent with each. It needs
no signing secret (the headers authenticate the server; a secret, if given, signs as above), and
the backport extensions do not apply to it.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.errors import FhirError, Issue, Unprocessable
from fhir_server.fhir.instants import parse_instant
from fhir_server.fhir.models import SUPPORTED_TYPES

from .topics import REFERENCE_FILTERS, REQUIRED_FILTERS, Topic

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
SIGNING_SECRET = "https://w3id.org/sg-fhir/StructureDefinition/subscription-signing-secret"
PROFILE = BACKPORT + "backport-subscription"

PAYLOAD_CONTENTS = ("empty", "id-only", "full-resource")
FHIR_JSON = ("application/fhir+json", "application/json")
DEFAULT_TIMEOUT = 10
MAX_TIMEOUT = 60
DEFAULT_MAX_COUNT = 100
MAX_MAX_COUNT = 1000
MIN_HEARTBEAT = 1
MIN_SECRET_LENGTH = 16
# Headers the server sets itself; a subscriber may not override them.
RESERVED_HEADERS = {"content-type", "content-length", "host", "x-sg-signature", "x-sg-subscription"}


@dataclass(frozen=True)
class SubscriptionSpec:
    """What delivery needs from a valid Subscription (stored as JSON in ``subscription_state.spec``)."""

    topic: str
    filters: list[tuple[str, list[str]]]
    endpoint: str
    headers: list[tuple[str, str]]
    content: str  # empty | id-only | full-resource
    mime_type: str
    heartbeat: int | None  # seconds
    timeout: int  # seconds
    max_count: int
    end: str | None = None  # Subscription.end (instant): no events after it; then status off
    # A classic R4 Subscription: ``topic`` holds its search criteria (``Observation?code=…``), one
    # notification per matching create/update, ``content`` empty (ping) or full-resource (PUT).
    classic: bool = False

    @property
    def criteria(self) -> tuple[str, list[tuple[str, str]]]:
        """A classic Subscription's criteria as (resource type, search parameters)."""
        return split_criteria(self.topic)

    def ended(self, now: datetime) -> bool:
        """subscription.html: "the time for the server to turn the subscription off"."""
        return self.end is not None and parse_instant(self.end, parameter="Subscription.end") <= now

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SubscriptionSpec":
        return cls(**{**data, "filters": [(n, list(v)) for n, v in data["filters"]],
                      "headers": [(n, v) for n, v in data["headers"]]})


def parse_subscription(sub: dict[str, Any], topics: dict[str, Topic], *,
                       allow_http: bool = False) -> tuple[SubscriptionSpec, str | None]:
    """The spec and the signing secret found in the resource (None if it carries none).
    Raises :class:`Unprocessable` (422) listing every problem, each with its FHIRPath expression."""
    issues: list[Issue] = []

    def bad(message: str, where: str) -> None:
        issues.append(Issue("error", "invalid" if "required" not in message else "required", message,
                            (f"Subscription.{where}",)))

    if is_classic(sub.get("criteria")):
        return _classic(sub, bad, issues, allow_http)
    topic_url = sub.get("criteria")
    topic = topics.get(topic_url) if isinstance(topic_url, str) else None
    if topic is None:
        bad(f"criteria must be the canonical URL of a topic this server publishes ({', '.join(sorted(topics))}), "
            f"not {topic_url!r}", "criteria")
    filters = _filters(sub, topic, bad)
    channel = sub.get("channel") or {}
    endpoint, headers = _rest_hook(channel, bad, allow_http)
    payload = channel.get("payload")
    mime = _mime(payload or "application/fhir+json", bad)
    content = _ext_value(channel.get("_payload"), PAYLOAD_CONTENT, "valueCode") or "id-only"
    if content not in PAYLOAD_CONTENTS:
        bad(f"payload content {content!r} must be one of {', '.join(PAYLOAD_CONTENTS)}",
            "channel.payload.extension('backport-payload-content')")
    heartbeat = _int_ext(channel, HEARTBEAT_PERIOD, None, bad, "backport-heartbeat-period", low=MIN_HEARTBEAT)
    timeout = _int_ext(channel, TIMEOUT, DEFAULT_TIMEOUT, bad, "backport-timeout", low=1, high=MAX_TIMEOUT)
    max_count = _int_ext(channel, MAX_COUNT, DEFAULT_MAX_COUNT, bad, "backport-max-count", low=1, high=MAX_MAX_COUNT)
    secret = _secret(channel, bad)
    end = _end_and_status(sub, bad)
    if issues:
        raise Unprocessable(issues=issues)
    assert topic is not None and isinstance(endpoint, str)
    spec = SubscriptionSpec(topic.url, filters, endpoint, headers, content, mime, heartbeat, timeout or DEFAULT_TIMEOUT,
                            max_count or DEFAULT_MAX_COUNT, end)
    return spec, secret


def is_classic(criteria: Any) -> bool:
    """A search (``Type?…`` or ``Type``) rather than a topic's canonical URL."""
    return isinstance(criteria, str) and ":" not in criteria.split("?", 1)[0] and bool(criteria.strip())


def split_criteria(criteria: str) -> tuple[str, list[tuple[str, str]]]:
    """subscription.html: the criteria are a search string as if appended to the base URL."""
    res_type, _, query = criteria.strip().partition("?")
    return res_type, parse_qsl(query, keep_blank_values=True)


def _classic(sub: dict[str, Any], bad: Any, issues: list[Issue], allow_http: bool) -> tuple[SubscriptionSpec, str | None]:
    """A classic R4 Subscription (subscription.html): search criteria, rest-hook, payload or ping. The
    search parameters themselves are checked against the server's registry by :func:`check_criteria`."""
    criteria = str(sub["criteria"]).strip()
    res_type, _params = split_criteria(criteria)
    if res_type not in SUPPORTED_TYPES:
        bad(f"criteria {criteria!r} must start with a resource type this server stores, or be the canonical URL "
            "of a topic it publishes", "criteria")
    channel = sub.get("channel") or {}
    endpoint, headers = _rest_hook(channel, bad, allow_http)
    payload = channel.get("payload")
    mime = _mime(payload, bad) if payload else ""
    secret = _secret(channel, bad)
    end = _end_and_status(sub, bad)
    timeout = _int_ext(channel, TIMEOUT, DEFAULT_TIMEOUT, bad, "backport-timeout", low=1, high=MAX_TIMEOUT)
    if issues:
        raise Unprocessable(issues=issues)
    assert isinstance(endpoint, str)
    spec = SubscriptionSpec(criteria, [], endpoint, headers, "full-resource" if payload else "empty", mime, None,
                            timeout or DEFAULT_TIMEOUT, 1, end, classic=True)
    return spec, secret


def check_criteria(spec: SubscriptionSpec, registry: Any) -> None:
    """A classic Subscription's criteria parse as a strict search of its type (search.html#errors:
    an unknown parameter would silently match everything), else 422 naming Subscription.criteria."""
    from fhir_server.search.parse import parse_search

    res_type, params = spec.criteria
    try:
        parse_search(params, registry, [res_type], strict=True)
    except FhirError as exc:
        raise Unprocessable(f"criteria {spec.topic!r} is not a search this server can run: {exc.diagnostics}",
                            expression="Subscription.criteria") from None


def _rest_hook(channel: dict[str, Any], bad: Any, allow_http: bool) -> tuple[Any, list[tuple[str, str]]]:
    if channel.get("type") != "rest-hook":
        bad(f"channel.type {channel.get('type')!r} is not supported: this server delivers by 'rest-hook'",
            "channel.type")
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not _endpoint_ok(endpoint, allow_http):
        bad("channel.endpoint must be an absolute https URL (http only to a loopback address)", "channel.endpoint")
    return endpoint, _headers(channel.get("header") or [], bad)


def _mime(payload: Any, bad: Any) -> str:
    mime = str(payload).split(";", 1)[0].strip()
    if mime not in FHIR_JSON:
        bad(f"channel.payload {payload!r} is not supported; use application/fhir+json", "channel.payload")
    return mime


def _secret(channel: dict[str, Any], bad: Any) -> str | None:
    secret = _ext_value(channel, SIGNING_SECRET, "valueString")
    if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH):
        bad(f"the signing secret must be a string of at least {MIN_SECRET_LENGTH} characters",
            "channel.extension('subscription-signing-secret')")
    return secret


def _end_and_status(sub: dict[str, Any], bad: Any) -> str | None:
    end = sub.get("end")
    if end is not None:
        try:
            parse_instant(str(end), parameter="Subscription.end")
        except FhirError:
            bad(f"end {end!r} is not an instant", "end")
    if sub.get("status") not in ("requested", "active", "error", "off", None):
        bad(f"status {sub.get('status')!r} is not a Subscription status", "status")
    return end


def without_secret(sub: dict[str, Any]) -> dict[str, Any]:
    """The resource as stored and served: the signing-secret extension removed."""
    channel = dict(sub.get("channel") or {})
    exts = [e for e in channel.get("extension", []) if e.get("url") != SIGNING_SECRET]
    if exts:
        channel["extension"] = exts
    else:
        channel.pop("extension", None)
    return {**sub, "channel": channel}


def _filters(sub: dict[str, Any], topic: Topic | None, bad: Any) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    exts = (sub.get("_criteria") or {}).get("extension", [])
    for i, ext in enumerate(e for e in exts if e.get("url") == FILTER_CRITERIA):
        where = f"criteria.extension('backport-filter-criteria')[{i}]"
        raw = ext.get("valueString")
        if not isinstance(raw, str) or not raw.strip():
            bad("a filter criteria extension needs a valueString such as 'Flag?patient=Patient/1'", where)
            continue
        query = raw.split("?", 1)[1] if "?" in raw else raw
        if "?" in raw and topic is not None and topic.resource_types \
                and raw.split("?", 1)[0] not in topic.resource_types:
            bad(f"filter {raw!r} names a resource type the topic is not about", where)
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs:
            bad(f"filter {raw!r} has no name=value pair", where)
        for name, value in pairs:
            if ":" in name:
                bad(f"filter {name!r}: modifiers are not supported", where)
                continue
            if topic is not None and name not in topic.filters:
                bad(f"filter {name!r} is not one the topic can be filtered by ({', '.join(sorted(topic.filters))})",
                    where)
                continue
            values = [v.strip() for v in value.split(",") if v.strip()]
            if not values:
                bad(f"filter {name!r} has no value", where)
                continue
            if name in REFERENCE_FILTERS:
                values = [_reference(v, REFERENCE_FILTERS[name], name, bad, where) for v in values]
            found.append((name, values))
    if topic is not None:
        for required in REQUIRED_FILTERS.get(topic.url, set()) - {n for n, _ in found}:
            bad(f"a subscription to {topic.url} needs a '{required}' filter", "criteria.extension")
    return found


def _reference(value: str, default_type: str | None, name: str, bad: Any, where: str) -> str:
    if "/" not in value:
        if default_type is None:
            bad(f"filter {name!r} needs a typed reference such as 'Practitioner/1', not {value!r}", where)
            return value
        return f"{default_type}/{value}"
    res_type, _, res_id = value.rpartition("/")
    res_type = res_type.rsplit("/", 1)[-1]  # an absolute reference keeps its type/id
    if default_type is not None and res_type != default_type:
        bad(f"filter {name!r} takes a {default_type} reference, not {value!r}", where)
    return f"{res_type}/{res_id}"


def _headers(raw: list[Any], bad: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i, header in enumerate(raw):
        name, sep, value = str(header).partition(":")
        name = name.strip()
        if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
            bad(f"channel.header[{i}] must be 'Name: value' on one line", f"channel.header[{i}]")
        elif name.lower() in RESERVED_HEADERS:
            bad(f"channel.header[{i}] may not set {name}: the server sets it", f"channel.header[{i}]")
        else:
            out.append((name, value.strip()))
    return out


def _endpoint_ok(url: str, allow_http: bool) -> bool:
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        return False
    if parts.scheme == "https" or allow_http:
        return True
    host = parts.hostname
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ext_value(element: Any, url: str, key: str) -> Any:
    for ext in (element or {}).get("extension", []) if isinstance(element, dict) else []:
        if ext.get("url") == url:
            return ext.get(key)
    return None


def _int_ext(channel: dict[str, Any], url: str, default: int | None, bad: Any, name: str, *,
             low: int, high: int | None = None) -> int | None:
    key = "valuePositiveInt" if url == MAX_COUNT else "valueUnsignedInt"
    value = None
    for ext in channel.get("extension", []) or []:
        if ext.get("url") == url:
            value = ext.get(key, ext.get("valueUnsignedInt", ext.get("valuePositiveInt")))
    if value is None:
        return default
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        limits = f"{low}–{high}" if high is not None else f"at least {low}"
        bad(f"{name} must be a whole number of {limits}", f"channel.extension('{name}')")
        return default
    return value
