"""A live server for the third-party FHIR client tests: the real app over real HTTP on a free
localhost port, with real commits (``committing_app``), on SQLite and PostgreSQL.

The public base URL in the settings is the server's own address, so that the Location headers,
``fullUrl`` values and paging links the server writes are URLs the clients can follow as they are.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pytest
import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from fhir_server.config import Settings


def _not_ready(environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"not ready\n"]


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    app: Flask


@pytest.fixture
def http_listener() -> Iterator[BaseWSGIServer]:
    """A threaded WSGI server bound to a free port; the app is put in place by ``live_server``.

    Binding first is what lets the settings (and so the app) know the port before the app exists.
    """
    server = make_server("127.0.0.1", 0, _not_ready, threaded=True)
    yield server
    server.server_close()


@pytest.fixture
def settings(settings: Settings, http_listener: BaseWSGIServer) -> Settings:
    """The suite's settings with the live server's address as the public FHIR base URL."""
    return settings.with_overrides(base_url=f"http://127.0.0.1:{http_listener.server_port}/fhir")


@pytest.fixture
def live_server(http_listener: BaseWSGIServer, committing_app: Flask, settings: Settings) -> Iterator[LiveServer]:
    """The app served over HTTP in a background thread; stopped (and its tables emptied by
    ``committing_app``) after the test."""
    http_listener.app = committing_app
    thread = threading.Thread(target=http_listener.serve_forever, kwargs={"poll_interval": 0.05},
                              name="fhir-live-server", daemon=True)
    thread.start()
    try:
        requests.get(f"{settings.base_url}/metadata", timeout=10).raise_for_status()
        yield LiveServer(base_url=settings.base_url, app=committing_app)
    finally:
        http_listener.shutdown()
        thread.join(timeout=10)
