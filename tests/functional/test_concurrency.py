"""No lost updates under concurrent writers (http.html#concurrency), with real commits."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import simplejson

from .test_crud import FHIR_JSON, body, patient


def test_if_match_lets_exactly_one_concurrent_writer_win(committing_app):
    client = committing_app.test_client()
    created = body(client.post("/fhir/Patient", data=simplejson.dumps(patient()), content_type=FHIR_JSON))
    pid = created["id"]

    def attempt(n: int) -> int:
        c = committing_app.test_client()
        changed = dict(created, name=[{"family": f"Writer{n}"}])
        return c.put(f"/fhir/Patient/{pid}", data=simplejson.dumps(changed), content_type=FHIR_JSON,
                     headers={"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(8)))
    assert sorted(statuses) == [200] + [412] * 7
    final = body(client.get(f"/fhir/Patient/{pid}"))
    assert final["meta"]["versionId"] == "2"


def test_concurrent_updates_each_get_their_own_version(committing_app):
    client = committing_app.test_client()
    created = body(client.post("/fhir/Patient", data=simplejson.dumps(patient()), content_type=FHIR_JSON))
    pid = created["id"]

    def attempt(n: int) -> int:
        c = committing_app.test_client()
        changed = dict(created, name=[{"family": f"Writer{n}"}])
        return c.put(f"/fhir/Patient/{pid}", data=simplejson.dumps(changed), content_type=FHIR_JSON).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(attempt, range(6))) == [200] * 6
    history = body(client.get(f"/fhir/Patient/{pid}/_history?_count=50"))
    assert history["total"] == 7
    assert sorted(int(e["resource"]["meta"]["versionId"]) for e in history["entry"]) == list(range(1, 8))
