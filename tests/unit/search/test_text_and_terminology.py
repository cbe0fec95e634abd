"""Pure parts of _text/_content (search/text.py) and of ValueSet expansion and subsumption
(search/terminology.py): tokenising, query parsing, CodeSystem hierarchies and filters."""
from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest
from fhir_server.search.terminology import CodeSystemIndex, Unexpandable, _apply_filter
from fhir_server.search.text import MAX_WORDS_LENGTH, TextQuery, parse_text_query, text_rows, words_of


def test_words_are_folded_and_split_on_anything_but_letters_and_digits():
    assert words_of("Émile O'Brien-Smith, 3rd_floor 12.5kg") == [
        "emile", "o", "brien", "smith", "3rd", "floor", "12", "5kg"]


def test_text_rows_hold_distinct_narrative_and_content_words():
    rows = text_rows({"resourceType": "Patient", "id": "abc123", "meta": {"versionId": "1"},
                      "text": {"status": "generated", "div": "<div><p>Seen &amp; <b>seen</b> again</p></div>"},
                      "name": [{"family": "Ward", "given": ["Ana"]}], "photo": [{"data": "QUJD"}]})
    by_param = {r["param"]: r["words"] for r in rows}
    assert by_param["_text"] == " seen again "
    assert by_param["_content"] == " generated ward ana seen again "  # no id, meta, data, tags
    assert text_rows({"resourceType": "Basic", "id": "x"}) == []


def test_very_long_content_is_cut_at_a_word_boundary():
    words = " ".join(f"w{i}" for i in range(60_000))
    content = text_rows({"resourceType": "Basic", "code": {"text": words}})[0]["words"]
    assert len(content) <= MAX_WORDS_LENGTH and content.startswith(" w0 ") and content.endswith(" ")


def test_text_queries_and_words_or_groups_and_comma_alternatives():
    assert parse_text_query("_text", ["bruise OR burn injury"]) == TextQuery(((("bruise", "burn"), ("injury",)),))
    assert parse_text_query("_text", ["a AND b", "c"]) == TextQuery(((("a",), ("b",)), (("c",),)))
    assert parse_text_query("_text", ["OR x"]) == TextQuery(((("x",),),))  # a leading OR joins nothing
    with pytest.raises(BadRequest) as exc:
        parse_text_query("_content", ["-- !!"])
    assert exc.value.issues[0].expression == ("_content",)


HIERARCHY = {"url": "s", "content": "complete", "hierarchyMeaning": "is-a", "concept": [
    {"code": "a", "concept": [{"code": "b", "concept": [{"code": "c"}]}]},
    {"code": "d", "property": [{"code": "parent", "valueCode": "c"}, {"code": "colour", "valueString": "red"}]},
    {"code": "e", "property": [{"code": "child", "valueCode": "a"}]}]}


def test_hierarchy_from_nesting_and_parent_child_properties():
    cs = CodeSystemIndex.build(HIERARCHY)
    assert cs.descendants("a") == {"b", "c", "d"}
    assert cs.descendants("e") == {"a", "b", "c", "d"}
    assert cs.ancestors("d") == {"c", "b", "a", "e"}
    grouped = CodeSystemIndex.build(dict(HIERARCHY, hierarchyMeaning="grouped-by"))
    assert grouped.descendants("a") == set()  # nesting that is not is-a is not subsumption


def test_filters():
    cs = CodeSystemIndex.build(HIERARCHY)
    assert _apply_filter(cs, {"property": "concept", "op": "is-a", "value": "b"}) == {"b", "c", "d"}
    assert _apply_filter(cs, {"property": "concept", "op": "descendent-of", "value": "b"}) == {"c", "d"}
    assert _apply_filter(cs, {"property": "concept", "op": "is-not-a", "value": "a"}) == {"e"}
    assert _apply_filter(cs, {"property": "concept", "op": "generalizes", "value": "b"}) == {"a", "b", "e"}
    assert _apply_filter(cs, {"property": "concept", "op": "in", "value": "a, e"}) == {"a", "e"}
    assert _apply_filter(cs, {"property": "colour", "op": "=", "value": "red"}) == {"d"}
    assert _apply_filter(cs, {"property": "colour", "op": "exists", "value": "false"}) == {"a", "b", "c", "e"}
    assert _apply_filter(cs, {"property": "code", "op": "regex", "value": "[a-c]"}) == {"a", "b", "c"}
    with pytest.raises(Unexpandable):
        _apply_filter(cs, {"property": "concept", "op": "is-a", "value": "zz"})
    with pytest.raises(Unexpandable):
        _apply_filter(cs, {"property": "concept", "op": "child-of", "value": "a"})
