"""$import-agency-data through HTTP: parameters, uploads and the asynchronous request pattern."""
from __future__ import annotations

from ..functional.test_crud import body


def test_format_is_required_and_checked(client):
    res = client.post("/fhir/$import-agency-data", data=b"a,b\n", content_type="text/csv")
    assert res.status_code == 400
    assert body(res)["issue"][0]["expression"] == ["format"]
    res = client.post("/fhir/$import-agency-data?format=excel", data=b"a,b\n", content_type="text/csv")
    assert res.status_code == 400
    assert "cin-census-xml" in body(res)["issue"][0]["diagnostics"]


def test_a_file_is_required(client):
    res = client.post("/fhir/$import-agency-data?format=cin-census-xml")
    assert res.status_code == 422
    assert body(res)["resourceType"] == "OperationOutcome"


def test_get_is_refused(client):
    assert client.get("/fhir/$import-agency-data?format=cin-census-xml").status_code in (400, 405)


def test_unknown_async_job_is_404(client):
    res = client.get("/fhir/_async/doesnotexist")
    assert res.status_code == 404
    assert body(res)["resourceType"] == "OperationOutcome"


def test_operation_is_in_the_capability_statement(client):
    statement = body(client.get("/fhir/metadata"))
    ops = [o["name"] for o in statement["rest"][0].get("operation", [])]
    assert "import-agency-data" in ops


import time
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def test_sync_import_of_a_raw_xml_body_and_a_multipart_upload(client):
    xml = (FIXTURES / "cin" / "la202_2023.xml").read_bytes()
    res = client.post("/fhir/$import-agency-data?format=cin-census-xml&filename=la202_2023.xml", data=xml,
                      content_type="application/xml")
    assert res.status_code == 200, res.data
    headline = body(res)["issue"][0]["diagnostics"]
    assert "la202_2023.xml" in headline and "created" in headline
    patients = body(client.get("/fhir/Patient?_summary=count"))["total"]
    assert patients > 0
    police = (FIXTURES / "police" / "notifications.csv").read_bytes()
    res = client.post("/fhir/$import-agency-data", data={
        "format": "police-notifications-csv", "file": (__import__("io").BytesIO(police), "notifications.csv")},
        content_type="multipart/form-data")
    assert res.status_code == 200, res.data
    assert body(client.get("/fhir/Patient?_summary=count"))["total"] > patients


def test_hostile_xml_is_rejected_with_nothing_written(client):
    xml = (FIXTURES / "cin" / "hostile_xxe.xml").read_bytes()
    res = client.post("/fhir/$import-agency-data?format=cin-census-xml", data=xml, content_type="application/xml")
    assert res.status_code == 422
    assert any(i["code"] == "security" for i in body(res)["issue"])
    assert body(client.get("/fhir/Patient?_summary=count"))["total"] == 0


def test_async_import_with_respond_async(committing_app):
    client = committing_app.test_client()
    xml = (FIXTURES / "cin" / "la202_2023.xml").read_bytes()
    kickoff = client.post("/fhir/$import-agency-data?format=cin-census-xml", data=xml,
                          content_type="application/xml", headers={"Prefer": "respond-async"})
    assert kickoff.status_code == 202, kickoff.data
    status_url = kickoff.headers["Content-Location"].replace("http://localhost", "")
    assert "/fhir/_async/" in status_url
    deadline = time.monotonic() + 60
    while True:
        polled = client.get(status_url)
        if polled.status_code != 202 or time.monotonic() > deadline:
            break
        assert polled.headers.get("X-Progress")
        time.sleep(0.1)
    assert polled.status_code == 200, polled.data
    result = body(polled)
    assert result["type"] == "batch-response"
    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert "created" in result["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert body(client.get("/fhir/Patient?_summary=count"))["total"] > 0
    assert client.delete(status_url).status_code == 202
