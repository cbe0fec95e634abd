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
