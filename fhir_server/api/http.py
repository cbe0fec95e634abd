"""Thin Flask handlers: every FHIR URL goes to the framework-free router."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from ..errors import BadRequest, FhirError, PayloadTooLarge
from ..fhir import jsonio
from ..auth.smart import request_context as auth_context
from ..rest.messages import FhirRequest, FhirResponse
from .negotiation import CSV, FHIR_JSON, body_media_type, response_format

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# Non-FHIR bodies an operation may receive (agency files for $import-agency-data).
# (JSON agency files go as multipart or application/octet-stream: application/json means FHIR JSON.)
UPLOAD_TYPES = {"text/csv", "application/xml", "text/xml", "application/octet-stream"}


def make_blueprint(url_prefix: str) -> Blueprint:
    bp = Blueprint("fhir", __name__, url_prefix=url_prefix or None)

    @bp.route("/", methods=METHODS, defaults={"path": ""}, strict_slashes=False)
    @bp.route("/<path:path>", methods=METHODS)
    def fhir(path: str) -> Response:
        services = current_app.extensions["fhir"]
        media = response_format(request.args.get("_format"), request.headers.get("Accept"),
                                csv=_is_operation(path))
        fhir_request = FhirRequest(
            method=request.method,
            path=path,
            ctx=auth_context(services, path),  # auth hook: 401 here, before the body is read
            query=[(k, v) for k, v in request.args.items(multi=True)],
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        try:
            _read_body(fhir_request, services.settings)
        except FhirError as exc:  # (a 400/413 before the router: audited like its refusals)
            services.router.failed(fhir_request, exc)
            raise
        return render(services.router.handle(fhir_request), media)

    return bp


def _read_body(req: FhirRequest, settings: Any) -> None:
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        raise PayloadTooLarge(f"The body exceeds the {settings.max_body_bytes}-byte limit")
    if req.method not in ("POST", "PUT", "PATCH"):
        return
    if _is_operation(req.path) and _operation_upload(req, settings):
        return
    raw = request.get_data(cache=False)
    if len(raw) > settings.max_body_bytes:
        raise PayloadTooLarge(f"The body exceeds the {settings.max_body_bytes}-byte limit")
    if not raw:
        last = req.path.rstrip("/").rsplit("/", 1)[-1]
        if req.method == "POST" and (last == "_search" or last.startswith("$")):
            return  # search and operations may be invoked with parameters in the URL only
        raise BadRequest("This interaction needs a body")
    req.content_type = body_media_type(request.headers.get("Content-Type"))
    if req.content_type == "application/x-www-form-urlencoded":
        req.body = raw
    else:
        req.body = jsonio.loads(raw, max_depth=settings.max_json_depth)


def _is_operation(path: str) -> bool:
    return path.rstrip("/").rsplit("/", 1)[-1].startswith("$")


def _operation_upload(req: FhirRequest, settings: Any) -> bool:
    """Operations may take agency files rather than FHIR: multipart/form-data parts, or a raw body
    (CSV, XML, JSON that is not FHIR). They arrive as ``req.files``; FHIR JSON takes the usual path."""
    media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        req.content_type = media
        req.files = [(f.filename or name, f.read()) for name, f in request.files.items(multi=True)]
        req.query += [(k, v) for k, v in request.form.items(multi=True)]
        return True
    if media in UPLOAD_TYPES:
        req.content_type = media
        raw = request.get_data(cache=False)
        req.files = [(request.args.get("filename") or "upload", raw)]
        return True
    return False


def render(res: FhirResponse, media: str) -> Response:
    headers = dict(res.headers)
    if res.raw is not None:  # an operation's own representation (CSV)
        return Response(res.raw, status=res.status, headers=headers, content_type=res.media_type)
    if media == CSV:  # asked of an operation that answers in FHIR only (or an error)
        media = FHIR_JSON
    if res.resource is None:
        empty = Response(status=res.status, headers=headers)
        del empty.headers["Content-Type"]  # no body, so no media type (not Flask's text/html)
        return empty
    pretty = request.args.get("_pretty") == "true"
    return Response(jsonio.dumps(res.resource, pretty=pretty), status=res.status, headers=headers,
                    content_type=f"{media}; charset=utf-8")


def register(app: Flask, url_prefix: str) -> None:
    app.register_blueprint(make_blueprint(url_prefix))
