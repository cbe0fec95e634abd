"""Safeguarding FHIR Server: a FHIR R4 server for multi-agency children's safeguarding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, Response
from sqlalchemy import Connection, Engine, text

from .config import Settings

if TYPE_CHECKING:
    from .audit.recorder import AuditRecorder
    from .auth.service import AuthService
    from .repository.sql import SqlRepository
    from .rest.router import Router


@dataclass
class Services:
    """What a request handler or a background job may use; built once per process."""

    settings: Settings
    engine: Engine
    repo: "SqlRepository"
    router: "Router"
    auth: "AuthService"
    audit: "AuditRecorder | None" = None


def build_services(settings: Settings | None = None, *, connection: Connection | None = None) -> Services:
    """Storage, search, operations and the router, without any web framework (workers, CLI, app).

    ``connection`` binds all storage to one connection (tests run each test in a transaction).
    This is the one place that wires the optional packages (agency mappings) into the server.
    """
    from mappings.operation import register_import_operation

    from .auth.access import ScopeGuard
    from .auth.service import AuthService, with_security
    from .operations.builtin import register_builtin_operations
    from .repository.sql import SqlRepository
    from .rest.bundles import process_bundle
    from .rest.capabilities import CapabilityBuilder
    from .rest.router import Router
    from .search.registry import SearchRegistry
    from .storage.db import make_engine
    from .worker import install_outbox_drain

    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url, busy_timeout=settings.sqlite_busy_timeout)
    registry = SearchRegistry.load(settings.profiles_dir)
    repo = SqlRepository(engine, registry, settings, connection=connection)
    router = Router(repo, register_builtin_operations(settings, registry), settings)
    router.bundle_processor = process_bundle
    # auth hook: tokens → RequestContext (AuthService), scopes checked on every request and entry
    auth = AuthService(settings, engine, connection=connection)
    if settings.auth_enabled:
        router.guards.append(ScopeGuard(router.operations, registry))
    if settings.auth_enabled and settings.access_policy_enabled:
        # access policy (auth/policy.py): role and agency rules, security labels and consent
        from .auth.policy import PolicyGuard, check_write, creates_with_client_id, hidden_from_writer, visibility
        router.guards.append(PolicyGuard())
        router.access_policy, router.write_policy = visibility, check_write
        router.hidden_write, router.update_create = hidden_from_writer, creates_with_client_id
    services = Services(settings, engine, repo, router, auth)
    register_import_operation(services)
    # -- record linkage (linkage/): $match, $link, $unlink and linking on write (outbox consumer) --
    from linkage import register_linkage
    register_linkage(services)
    # -- end record linkage --
    # -- risk summary (triage/): $triage, rescoring on write (after linkage's consumer), escalation Flags --
    from triage import register_triage
    register_triage(services, schedule=connection is None)
    # -- end risk summary --
    # -- subscriptions (subscriptions/): Subscription checks, $status/$events, delivery after drain --
    from subscriptions import register_subscriptions
    register_subscriptions(services, deliver=connection is None)
    # -- end subscriptions --
    from impact import register_impact
    register_impact(services)  # $intervention-impact (impact/)
    # -- audit trail and provenance (fhir_server/audit) --
    from .audit import install as install_audit
    services.audit = install_audit(services)
    # -- end audit trail --
    capabilities = CapabilityBuilder(settings, registry, router.operations)
    from subscriptions import with_subscription_capabilities  # the topics on the Subscription entry
    capabilities.statement = with_subscription_capabilities(capabilities.statement, settings)  # type: ignore[method-assign]
    if settings.auth_enabled:
        capabilities.statement = with_security(capabilities.statement, auth)  # type: ignore[method-assign]
    if services.audit is not None:  # audit trail: AuditEvent is read-only
        from .audit import with_read_only_audit
        capabilities.statement = with_read_only_audit(capabilities.statement)  # type: ignore[method-assign]
    if settings.auth_enabled and settings.access_policy_enabled:
        from .auth.policy import with_owner_only_types
        capabilities.statement = with_owner_only_types(capabilities.statement)  # type: ignore[method-assign]
    router.capabilities = capabilities.build
    if connection is None:
        install_outbox_drain(repo)
    return services


def create_app(settings: Settings | None = None, *, connection: Connection | None = None) -> Flask:
    """Build the WSGI app."""
    from .api import errors as api_errors, http
    from .auth import smart

    services = build_services(settings, connection=connection)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.extensions["fhir"] = services
    api_errors.register_error_handlers(app)
    smart.register(app, services.settings.base_path)  # auth hook: SMART endpoints, 401/403 challenges
    http.register(app, services.settings.base_path)
    from .audit import install_flask as install_audit_flask
    install_audit_flask(app, services.audit)  # authentication events → AuditEvents

    @app.get("/healthz")
    def healthz() -> Response:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return Response("ok\n", content_type="text/plain")

    return app
