"""``_text``, ``_content`` and ``_list`` through HTTP on SQLite and PostgreSQL (search.html#all)."""
from __future__ import annotations

from sqlalchemy import delete, func, select

from fhir_server.storage.tables import idx_text

from .test_crud import body, post, put

XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


def _patient(family: str, narrative: str | None = None, **extra) -> dict:
    out = {"resourceType": "Patient", "name": [{"family": family}], **extra}
    if narrative is not None:
        out["text"] = {"status": "generated", "div": XHTML.format(narrative)}
    return out


def _created(client, resource: dict) -> str:
    res = post(client, resource)
    assert res.status_code == 201, res.data
    return body(res)["id"]


def found(client, path: str) -> list[str]:
    res = client.get(path)
    assert res.status_code == 200, res.data
    return sorted(e["resource"]["id"] for e in body(res).get("entry", []) if e["search"]["mode"] == "match")


def error(client, path: str) -> dict:
    res = client.get(path)
    assert res.status_code == 400, res.data
    outcome = body(res)
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome["issue"][0]


def test_text_searches_the_narrative_words_without_tags_case_or_accents(client):
    a = _created(client, _patient("Zielińska", "<p>Referral from <b>Brontë</b> School about bruising</p>"))
    b = _created(client, _patient("Hughes", "<p>School nurse: bruising &amp; weight loss</p>"))
    _created(client, _patient("Bruising"))  # the word only outside the narrative
    assert found(client, "/fhir/Patient?_text=bruising") == sorted([a, b])
    assert found(client, "/fhir/Patient?_text=BRONTE") == [a]  # case- and accent-insensitive
    assert found(client, "/fhir/Patient?_text=school%20bruising%20referral") == [a]  # all words
    assert found(client, "/fhir/Patient?_text=weight%20loss") == [b]
    c = _created(client, _patient("Wała", "<p>Moved from Łódź; Ελένη</p>"))
    assert found(client, "/fhir/Patient?_text=%C5%81%C3%B3d%C5%BA") == [c]  # Łódź, beyond ASCII
    assert found(client, "/fhir/Patient?_text=%CE%B5%CE%BB%CE%B5%CE%BD%CE%B7") == [c]  # ελενη
    assert found(client, "/fhir/Patient?_text=bruis") == []  # whole words only
    assert found(client, "/fhir/Patient?_text=p") == []  # tags are not words
    assert found(client, "/fhir/Patient?_text=amp") == []  # entities are decoded
    assert found(client, "/fhir/Patient?_text=referral%20OR%20nurse") == sorted([a, b])
    assert found(client, "/fhir/Patient?_text=referral%20OR%20nurse%20weight") == [b]  # (or) and
    assert found(client, "/fhir/Patient?_text=referral,weight") == sorted([a, b])  # comma ORs values
    assert found(client, "/fhir/Patient?_text=referral&_text=weight") == []  # repeating ANDs


def test_content_searches_all_the_text_of_the_resource(client):
    a = _created(client, _patient("Okonkwo", "<p>Seen at A&amp;E</p>", gender="female",
                                  address=[{"city": "Sheffield", "line": ["12 Élan Road"]}]))
    b = _created(client, _patient("Sheffield"))
    obs = _created(client, {"resourceType": "Observation", "status": "final",
                            "code": {"text": "Sheffield safeguarding screen"}})
    assert found(client, "/fhir/Patient?_content=sheffield") == sorted([a, b])
    assert found(client, "/fhir/Patient?_content=elan%20female") == [a]
    assert found(client, "/fhir/Patient?_content=seen") == [a]  # the narrative is content too
    assert found(client, "/fhir/Patient?_text=sheffield") == []
    assert found(client, f"/fhir/Patient?_content={a}") == []  # ids and meta are not content
    whole = body(client.get("/fhir?_content=sheffield&_type=Patient,Observation"))
    assert sorted(e["resource"]["id"] for e in whole["entry"]) == sorted([a, b, obs])
    assert sorted(e["resource"]["id"] for e in body(client.get("/fhir?_content=safeguarding%20screen"))["entry"]
                  ) == [obs]


def test_text_index_follows_updates_deletes_and_combines_with_other_parameters(client):
    pid = _created(client, _patient("Adeyemi", "<p>Concern raised by health visitor</p>"))
    assert found(client, "/fhir/Patient?_text=visitor&family=adeyemi") == [pid]
    current = body(client.get(f"/fhir/Patient/{pid}"))
    put(client, dict(current, text={"status": "generated", "div": XHTML.format("<p>Closed</p>")}))
    assert found(client, "/fhir/Patient?_text=visitor") == []
    assert found(client, "/fhir/Patient?_text=closed&_count=1&_total=accurate") == [pid]
    client.delete(f"/fhir/Patient/{pid}")
    assert found(client, "/fhir/Patient?_text=closed") == []


def test_reindex_rebuilds_the_text_rows(client, app):
    pid = _created(client, _patient("Nowak", "<p>Missing from education</p>"))
    repo = app.extensions["fhir"].repo
    with repo.unit_of_work() as uow:
        uow.conn.execute(delete(idx_text))
    assert found(client, "/fhir/Patient?_text=education") == []
    with repo.unit_of_work() as uow:
        assert uow.reindex("Patient") >= 1
        assert uow.conn.execute(select(func.count()).select_from(idx_text)).scalar_one() >= 2
    assert found(client, "/fhir/Patient?_text=education") == [pid]


def test_text_and_content_errors(client):
    assert error(client, "/fhir/Patient?_text=%21%21%21")["expression"] == ["_text"]  # no word
    issue = error(client, "/fhir/Patient?_content:exact=x")
    assert issue["expression"] == ["_content:exact"] and "not supported" in issue["diagnostics"]
    assert found(client, "/fhir/Patient?_text=") == []  # an empty value is ignored


def test_list_selects_the_items_of_a_list(client):
    kids = [_created(client, _patient(f"Child{i}")) for i in range(3)]
    obs = _created(client, {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}})
    lst = {"resourceType": "List", "id": "watch", "status": "current", "mode": "working",
           "entry": [{"item": {"reference": f"Patient/{kids[0]}"}}, {"item": {"reference": f"Patient/{kids[2]}"}},
                     {"item": {"reference": f"Observation/{obs}"}}]}
    assert put(client, lst).status_code == 201
    other = {"resourceType": "List", "id": "other", "status": "current", "mode": "working",
             "entry": [{"item": {"reference": f"Patient/{kids[1]}"}}]}
    assert put(client, other).status_code == 201
    assert found(client, "/fhir/Patient?_list=watch") == sorted([kids[0], kids[2]])
    assert found(client, "/fhir/Patient?_list=List/watch") == sorted([kids[0], kids[2]])
    assert found(client, "/fhir/Patient?_list=watch,other") == sorted(kids)
    assert found(client, f"/fhir/Patient?_list=watch&_id={kids[2]}") == [kids[2]]
    assert found(client, "/fhir/Observation?_list=watch") == [obs]
    assert found(client, "/fhir?_list=watch") == sorted([kids[0], kids[2], obs])  # whole-system search
    assert found(client, "/fhir/Patient?_list=absent") == []
    client.delete("/fhir/List/watch")
    assert found(client, "/fhir/Patient?_list=watch") == []  # a deleted List has no items


def test_list_errors(client):
    issue = error(client, "/fhir/Patient?_list=$current-problems")
    assert issue["expression"] == ["_list"] and "not supported" in issue["diagnostics"]
    assert error(client, "/fhir/Patient?_list=a%20b")["expression"] == ["_list"]
    assert error(client, "/fhir/Patient?_list=,")["expression"] == ["_list"]
    assert error(client, "/fhir/Patient?_list:missing=true")["expression"] == ["_list:missing"]
