"""labels.policy_columns: the access policy's facts about a version as the ``resource`` columns its
SQL tests (policy.Visibility.clause), read from the JSON as Visibility.allows reads them."""
from __future__ import annotations

from fhir_server.auth import labels
from fhir_server.auth.labels import (ACT_CODE, AGENCY_TAG_SYSTEM, CONFIDENTIALITY, OWNER_CLIENT_SYSTEM, label_mask,
                                     policy_columns)


def test_each_sensitive_label_has_its_own_bit_and_other_codes_none() -> None:
    bits = [label_mask({label}) for label in labels.SENSITIVE]
    assert sorted(bits) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert label_mask({(ACT_CODE, "SDV"), (CONFIDENTIALITY, "R")}) == 1 | 64
    assert label_mask({("http://example.org/other", "SDV"), (ACT_CODE, "TABOO")}) == 0


def test_columns_hold_labels_agencies_and_owner_clients() -> None:
    content = {"resourceType": "Subscription", "meta": {
        "security": [{"system": CONFIDENTIALITY, "code": "V"}, {"system": ACT_CODE, "code": "PSY"},
                     {"system": ACT_CODE}],
        "tag": [{"system": AGENCY_TAG_SYSTEM, "code": "police/01"}, {"system": AGENCY_TAG_SYSTEM, "code": "health/RXX"},
                {"system": OWNER_CLIENT_SYSTEM, "code": "feed-1"}, {"system": "http://example.org", "code": "x"}]}}
    assert policy_columns(content) == {"sensitivity": 128 | 2, "agencies": "\thealth/RXX\tpolice/01\t",
                                       "owners": "\tfeed-1\t"}
    assert policy_columns({"resourceType": "Patient"}) == {"sensitivity": 0, "agencies": "", "owners": ""}
    assert policy_columns(None) == {"sensitivity": 0, "agencies": "", "owners": ""}


def test_a_tab_inside_a_tag_code_cannot_forge_another_whole_code() -> None:
    # "x<TAB>local-authority/201" must not read as the tag local-authority/201 (its agency's own data)
    content = {"meta": {"tag": [{"system": AGENCY_TAG_SYSTEM, "code": "x\tlocal-authority/201"}]}}
    agencies = policy_columns(content)["agencies"]
    assert "\tlocal-authority/201\t" not in agencies and agencies == "\tx local-authority/201\t"
