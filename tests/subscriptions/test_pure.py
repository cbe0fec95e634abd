"""The pure parts of subscriptions/: topic loading, filter matching, Subscription parsing, signing."""
from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.errors import Unprocessable
from subscriptions.signing import sign, verify
from subscriptions.spec import parse_subscription, without_secret
from subscriptions.topics import CHILD_AGENCY_DATA, ESCALATION_FLAG, EventFacts, flag_bands, load_topics, matches

from .conftest import SECRET, flag, subscription

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def test_the_published_topics_load_with_their_triggers_and_filters() -> None:
    topics = load_topics(PROFILES)
    escalation = topics[ESCALATION_FLAG]
    assert escalation.triggered_by("Flag", "delete") and not escalation.triggered_by("Observation", "create")
    assert {"patient", "lead-practitioner", "organization", "band"} <= escalation.filters
    child = topics[CHILD_AGENCY_DATA]
    assert child.triggered_by("Observation", "create") and not child.triggered_by("Observation", "delete")


def test_matching_ands_filters_and_ors_values() -> None:
    content = flag("Patient/1", band="Amber", author="Organization/la")
    facts = EventFacts("Flag", "f", "create", content, frozenset({"Patient/1"}),
                       lead_practitioners=frozenset({"Practitioner/9"}), organizations=frozenset())
    assert flag_bands(content) == {"amber"}
    assert matches(ESCALATION_FLAG, [("patient", ["Patient/2", "Patient/1"]), ("band", ["amber"])], facts)
    assert not matches(ESCALATION_FLAG, [("patient", ["Patient/1"]), ("band", ["red"])], facts)
    assert matches(ESCALATION_FLAG, [("organization", ["Organization/la"])], facts)  # the author
    assert matches(ESCALATION_FLAG, [("lead-practitioner", ["Practitioner/9"])], facts)
    assert matches(ESCALATION_FLAG, [("code", ["https://w3id.org/sg-fhir/CodeSystem/safeguarding-flag|escalation"])],
                   facts)
    other = EventFacts("Flag", "f", "create", {"resourceType": "Flag", "code": {"text": "x"}}, frozenset({"Patient/1"}))
    assert not matches(ESCALATION_FLAG, [], other)  # not a safeguarding Flag


def test_parse_reads_the_backport_shape_and_keeps_the_secret_out_of_the_resource() -> None:
    body = subscription("https://hooks.example.org/sg", filters=("Flag?patient=7&band=red",), content="full-resource",
                        heartbeat=60, max_count=10, headers=("Authorization: Bearer t",))
    spec, secret = parse_subscription(body, load_topics(PROFILES))
    assert secret == SECRET
    assert spec.filters == [("patient", ["Patient/7"]), ("band", ["red"])]
    assert (spec.content, spec.heartbeat, spec.max_count, spec.timeout) == ("full-resource", 60, 10, 10)
    assert spec.headers == [("Authorization", "Bearer t")]
    assert SECRET not in str(without_secret(body))
    with pytest.raises(Unprocessable) as refused:
        parse_subscription(subscription("http://hooks.example.org/sg"), load_topics(PROFILES))
    assert refused.value.issues[0].expression == ("Subscription.channel.endpoint",)
    parse_subscription(subscription("http://hooks.example.org/sg"), load_topics(PROFILES), allow_http=True)


def test_the_signature_binds_body_secret_and_time() -> None:
    body = b'{"resourceType":"Bundle"}'
    header = sign(SECRET, body, timestamp=1_000_000)
    assert verify(SECRET, body, header, now=1_000_010)
    assert not verify(SECRET, body, header, now=1_000_000 + 3600)  # a replay, much later
    assert not verify(SECRET, body + b"x", header, now=1_000_010)
    assert not verify(SECRET[::-1], body, header, now=1_000_010)
    assert not verify(SECRET, body, header.replace("t=1000000", "t=1000005"), now=1_000_010)
    assert not verify(SECRET, body, "garbage")


def test_a_search_criteria_is_a_classic_r4_subscription() -> None:
    from datetime import datetime

    from subscriptions.criteria import may_match
    from subscriptions.notifications import classic_request
    from subscriptions.store import Event

    topics = load_topics(PROFILES)
    sub = {"resourceType": "Subscription", "status": "requested", "reason": "r",
           "criteria": "Observation?code=http://loinc.org|1975-2",
           "channel": {"type": "rest-hook", "endpoint": "https://hook.example.org/fhir/",
                       "payload": "application/fhir+json"}}
    spec, secret = parse_subscription(sub, topics)
    assert spec.classic and secret is None and spec.content == "full-resource" and spec.max_count == 1
    assert spec.criteria == ("Observation", [("code", "http://loinc.org|1975-2")])
    assert may_match(spec, "Observation", "update") and not may_match(spec, "Observation", "delete")
    assert not may_match(spec, "Condition", "create")
    event = Event(1, 7, datetime(2026, 1, 1), "Observation", "o1", 3, "update")
    body = {"resourceType": "Observation", "id": "o1"}
    assert classic_request(spec, event, {("Observation", "o1", 3): body}) == (
        "PUT", "https://hook.example.org/fhir/Observation/o1", b'{"resourceType":"Observation","id":"o1"}')
    ping, _ = parse_subscription({**sub, "channel": {**sub["channel"], "payload": None}}, topics)
    assert classic_request(ping, event, {}) == ("POST", "https://hook.example.org/fhir/", b"")
    topic_spec, _ = parse_subscription(subscription("https://hook.example.org/n"), topics)
    assert not topic_spec.classic and not may_match(topic_spec, "Flag", "create")
