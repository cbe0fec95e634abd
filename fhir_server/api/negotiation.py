"""Content negotiation (http.html#mime-type, #parameters ``_format``, ``_pretty``)."""
from __future__ import annotations

from ..errors import NotAcceptable, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "json", "text/json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "xml", "text/xml"}
CSV = "text/csv"  # offered by operations that export tables ($triage)
CSV_TYPES = {"text/csv", "csv"}
BODY_TYPES = JSON_TYPES | {"application/json-patch+json", "application/x-www-form-urlencoded"}


def response_format(format_param: str | None, accept: str | None, *, csv: bool = False) -> str:
    """The media type to answer with: FHIR JSON, or CSV when ``csv`` (an operation's URL) allows it."""
    if format_param:
        wanted = format_param.split(";")[0].strip().lower()
        if wanted in JSON_TYPES:
            return FHIR_JSON
        if csv and wanted in CSV_TYPES:
            return CSV
        if wanted in XML_TYPES:
            raise NotAcceptable("XML is not supported yet; ask for _format=json", expression="_format")
        raise NotAcceptable(f"Unknown _format {format_param!r}", expression="_format")
    if not accept:
        return FHIR_JSON
    offered = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for media in offered:
        if csv and media == CSV:
            return CSV
        if media in JSON_TYPES or media in ("*/*", "application/*", "text/html", "text/*"):
            return FHIR_JSON
    if any(m in XML_TYPES for m in offered):
        raise NotAcceptable("XML is not supported yet; send Accept: application/fhir+json", expression="Accept")
    raise NotAcceptable(f"Cannot produce any of {accept!r}; this server speaks application/fhir+json",
                        expression="Accept")


def body_media_type(content_type: str | None) -> str:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in BODY_TYPES:
        return "application/fhir+json" if media in JSON_TYPES else media
    if media in XML_TYPES:
        raise UnsupportedMediaType("XML bodies are not supported yet; send application/fhir+json",
                                   expression="Content-Type")
    raise UnsupportedMediaType(f"Unsupported Content-Type {content_type!r}; send application/fhir+json",
                               expression="Content-Type")
