"""The risk model and the escalation rules, as pure functions over the published configuration."""
from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from fhir_server.config import Settings
from triage.config import RiskConfigError, load_config, parse_config, system_url
from triage.model import ChildInput, Episode, Evidence, score_child
from triage.service import decide_flag

NOW = datetime(2026, 11, 25, 12, 0)
CIN = system_url("cin-assessment-factor")
RF = system_url("risk-factor")


@pytest.fixture(scope="module")
def config():
    return load_config(Settings.from_env().profiles_dir)


def ev(code: str, days_ago: float, *, system: str = RF, agency: str = "police/20", ref: str | None = None) -> Evidence:
    return Evidence(ref or f"Observation/{code}-{days_ago}", system, code, agency, NOW - timedelta(days=days_ago))


def test_weight_decays_with_a_half_life(config):
    fresh = score_child(ChildInput("c", evidence=[ev("missing-episode", 0)]), config, NOW)
    half = score_child(ChildInput("c", evidence=[ev("missing-episode", 90)]), config, NOW)
    assert fresh.score == 12.0 and half.score == 6.0  # missing: weight 12, half-life 90 days
    assert [r.factor for r in fresh.reasons] == ["missing"]
    assert fresh.reasons[0].evidence == ("Observation/missing-episode-0",)


def test_evidence_beyond_the_horizon_or_undated_says_nothing(config):
    old = ev("missing-episode", config.horizon_days + 1)
    undated = Evidence("Observation/x", RF, "missing-episode", "police/20", None)
    assert score_child(ChildInput("c", evidence=[old, undated]), config, NOW).score == 0


def test_corroboration_by_two_agencies_multiplies_and_keeps_a_line_per_agency(config):
    police = ev("domestic-abuse-child-not-present", 0)
    la = ev("3B", 0, system=CIN, agency="local-authority/202")
    result = score_child(ChildInput("c", evidence=[police, la]), config, NOW)
    assert {(r.agency, r.contribution, r.corroborated) for r in result.reasons} == {
        ("police/20", 30.0, True), ("local-authority/202", 30.0, True)}
    assert result.score == 60.0 and result.band == "red"


def test_toxic_trio_adds_its_bonus_and_reasons_add_up(config):
    la = "local-authority/202"
    result = score_child(ChildInput("c", evidence=[ev(c, 0, system=CIN, agency=la) for c in ("3B", "2B", "4B")]),
                         config, NOW)
    combo = [r for r in result.reasons if r.kind == "combination"]
    assert [r.factor for r in combo] == ["toxic-trio"] and combo[0].contribution == 25
    assert len(combo[0].evidence) == 3
    assert result.score == round(sum(r.contribution for r in result.reasons), 1) == 20 + 15 + 12 + 25


def test_repeats_count_up_to_max_occurrences(config):
    many = [ev("missing-episode", 0, ref=f"Observation/m{i}") for i in range(5)]
    assert score_child(ChildInput("c", evidence=many), config, NOW).score == 12 * config.max_occurrences


def test_open_episode_counts_and_names_the_lead_practitioner(config):
    plan = Episode("EpisodeOfCare/p", "cp-plan", "local-authority/202", NOW - timedelta(days=400), None, True,
                   {"reference": "Practitioner/sw1", "display": "Sam Worker"})
    cin = Episode("EpisodeOfCare/c", "cin", "local-authority/202", NOW - timedelta(days=10), None, True,
                  {"reference": "Practitioner/sw2"})
    result = score_child(ChildInput("c", episodes=[cin, plan]), config, NOW)
    assert result.score == 36 and result.lead == {"reference": "Practitioner/sw1", "display": "Sam Worker"}


def test_triggers(config):
    plan = Episode("EpisodeOfCare/p", "cp-plan", "local-authority/202", NOW - timedelta(days=100), None, True)
    da = ev("domestic-abuse-child-present", 2)
    fired = score_child(ChildInput("c", evidence=[da], episodes=[plan]), config, NOW).fired
    assert [f.code for f in fired] == ["domestic-abuse-on-plan"] and da.ref in fired[0].evidence
    # the same notification from the local authority's assessment is not a police notification
    la = ev("3A", 2, system=CIN, agency="local-authority/202")
    assert not score_child(ChildInput("c", evidence=[la], episodes=[plan]), config, NOW).fired
    two = [ev("missing-episode", 3, ref="Observation/a"), ev("missing-episode", 20, ref="Observation/b")]
    assert [f.code for f in score_child(ChildInput("c", evidence=two), config, NOW).fired] == ["repeat-missing"]
    apart = [ev("missing-episode", 3, ref="Observation/a"), ev("missing-episode", 60, ref="Observation/b")]
    assert not score_child(ChildInput("c", evidence=apart), config, NOW).fired
    injury = ev("ed-injury", 1, agency="health/R9Q")
    cin = Episode("EpisodeOfCare/c", "cin", "local-authority/202", NOW - timedelta(days=30), None, True)
    toddler = ChildInput("c", birth_date=date(2024, 6, 1), evidence=[injury], episodes=[cin])
    assert [f.code for f in score_child(toddler, config, NOW).fired] == ["young-child-injury-known-to-social-care"]
    older = ChildInput("c", birth_date=date(2015, 6, 1), evidence=[injury], episodes=[cin])
    assert not score_child(older, config, NOW).fired
    unknown = ChildInput("c", birth_date=date(2024, 6, 1), evidence=[injury])
    assert not score_child(unknown, config, NOW).fired


def test_flag_rules(config):
    def result(band: str, fired: tuple[str, ...] = ()):
        from triage.model import Fired, RiskScore
        return RiskScore("c", 0, band, (), tuple(Fired(f, f, ()) for f in fired), None, (), ())

    assert decide_flag(config, None, False, None, False, (), result("amber")).action == "raise"
    assert decide_flag(config, "amber", False, None, False, (), result("amber")).action == "none"
    assert decide_flag(config, "green", False, None, False, (), result("green", ("repeat-missing",))).causes == (
        "repeat-missing",)
    # open at amber: red grows it, amber again does nothing, green closes
    assert decide_flag(config, "amber", True, "amber", True, (), result("red")).action == "update"
    assert decide_flag(config, "amber", True, "amber", True, (), result("amber")).action == "none"
    assert decide_flag(config, "amber", True, "amber", True, (), result("green")).action == "close"
    # raised by a trigger alone: closes when the trigger is no longer active
    assert decide_flag(config, "green", True, "green", False, ("repeat-missing",),
                       result("green", ("repeat-missing",))).action == "none"
    assert decide_flag(config, "green", True, "green", False, ("repeat-missing",), result("green")).action == "close"


def test_a_bad_configuration_is_refused_with_its_reason():
    with pytest.raises(ValueError, match="unknown factors"):
        parse_config({"id": "m", "version": "1", "bands": [{"code": "green", "minScore": 0}], "factors": [],
                      "combinations": [{"code": "x", "factors": ["nope"], "bonus": 1}]})
    with pytest.raises(ValueError, match="weight"):
        parse_config({"id": "m", "version": "1", "bands": [{"code": "green", "minScore": 0}],
                      "factors": [{"code": "a", "weight": -1, "match": []}]})
    assert issubclass(RiskConfigError, ValueError)


def test_the_resources_written_are_valid_r4(config):
    from fhir_server.fhir.validation import validate_resource
    from triage import resources

    plan = Episode("EpisodeOfCare/p", "cp-plan", "local-authority/202", NOW - timedelta(days=100), None, True,
                   {"reference": "Practitioner/sw1"})
    result = score_child(ChildInput("c", evidence=[ev("domestic-abuse-child-present", 2)], episodes=[plan]),
                         config, NOW)
    built = [resources.risk_assessment(result, config, NOW),
             resources.escalation_flag(result, config, causes=["band-rise", "domestic-abuse-on-plan"],
                                       start="2026-11-25T12:00:00+00:00", assessment_id="a"),
             resources.provenance("Flag/f/_history/1", "CREATE", "why", result.evidence, NOW),
             resources.device(config)]
    for resource in built:
        validate_resource(resource)  # raises on an invalid resource
    assert built[0]["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == result.band == "amber"
