"""Settings, read once from ``FHIR_*`` environment variables with embedded defaults.

Every variable is documented in README.md ("Configuration"); nothing here is secret.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = REPO_ROOT / "var" / "fhir.db"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}")


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (os.environ.get(name) or "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one server process (gunicorn worker, Celery worker or CLI)."""

    database_url: str = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    # SQLite: how long a connection waits for another's write lock before SQLITE_BUSY (seconds).
    sqlite_busy_timeout: float = 30.0
    # None means "no broker": post-commit work (outbox drain) runs in-process.
    broker_url: str | None = None
    # The Celery queue tasks go to and workers read (separate deployments sharing one Redis).
    celery_queue: str = "celery"
    # How often the Celery beat drains the outbox whatever was sent: what a broker outage left behind.
    outbox_sweep_seconds: float = 60.0
    # Public base of the FHIR endpoint, used in fullUrl, Location and paging links.
    base_url: str = "http://127.0.0.1:8080/fhir"
    max_body_bytes: int = 64 * 1024 * 1024
    max_bundle_entries: int = 20_000
    default_page_size: int = 20
    max_page_size: int = 1_000
    max_json_depth: int = 64
    profiles_dir: Path = field(default=REPO_ROOT / "profiles")
    testing: bool = False
    # -- authentication (fhir_server/auth; docs/security.md) ---------------------------------------
    # Every API call needs a bearer token, except metadata, .well-known/* and auth/token.
    auth_enabled: bool = True
    # The server's signing keys: PEM text, or PEM file paths separated by commas; the first signs,
    # all verify (rotation). Unset: a key generated once and kept in the database (development).
    auth_signing_key: str | None = None
    auth_token_lifetime: int = 300  # seconds an access token lives (SMART suggests <= 5 minutes)
    # The development issuer (`fhir-server dev-token`): never enable it in production.
    auth_dev_issuer: bool = False
    # URL prefixes a client's jwks_url (and an assertion's jku) may point at.
    auth_trusted_jwks_urls: tuple[str, ...] = ()
    auth_jwks_timeout: float = 3.0  # seconds to fetch a JWK Set
    auth_jwks_cache_seconds: int = 300  # how long a fetched JWK Set is reused
    auth_key_cache_seconds: int = 30  # how long a process reuses the signing keys it read
    # An external OpenID Connect provider for practitioners' tokens: its issuer, its JWK Set (URL
    # or file) and the audience its tokens name (default: the FHIR base URL).
    auth_oidc_issuer: str | None = None
    auth_oidc_jwks: str | None = None
    auth_oidc_audience: str | None = None
    # -- subscriptions (subscriptions/; docs/subscriptions.md) ----------------------------------
    # How often the sweep re-sends undelivered events, due handshakes and heartbeats.
    subscription_sweep_seconds: float = 15.0
    # The longest wait between two delivery attempts (exponential backoff is capped here).
    subscription_max_backoff: int = 3600
    # Endpoints must be https unless this is on (development, tests, a receiver on localhost).
    subscription_allow_http: bool = False
    # -- risk scores (triage/; docs/triage.md) -----------------------------------------------------
    # How often every child is rescored without a write (recency decay, expiring triggers); 0: never.
    risk_recompute_seconds: float = 86400.0
    # -- audit trail (fhir_server/audit; docs/security.md) ------------------------------------------
    # An AuditEvent for every interaction and a Provenance for every write. Off only to measure it.
    audit_enabled: bool = True
    # Reads' AuditEvents on PostgreSQL commit without waiting for the WAL flush (audit/chain.py
    # append_read_audit); 1 makes them durable before the answer, at the cost of an fsync per read.
    audit_durable_reads: bool = False
    # The access policy (auth/policy.py: roles, agencies, labels, Consent) on top of the scopes. Off only
    # to measure its cost (bench/auth_audit.py); never in production.
    access_policy_enabled: bool = True

    @classmethod
    def from_env(cls) -> "Settings":
        base = cls()
        return cls(
            database_url=os.environ.get("FHIR_DATABASE_URL") or base.database_url,
            sqlite_busy_timeout=float(os.environ.get("FHIR_SQLITE_BUSY_TIMEOUT") or base.sqlite_busy_timeout),
            broker_url=os.environ.get("FHIR_BROKER_URL") or None,
            celery_queue=os.environ.get("FHIR_CELERY_QUEUE") or base.celery_queue,
            outbox_sweep_seconds=float(os.environ.get("FHIR_OUTBOX_SWEEP_SECONDS") or base.outbox_sweep_seconds),
            base_url=(os.environ.get("FHIR_BASE_URL") or base.base_url).rstrip("/"),
            max_body_bytes=_env_int("FHIR_MAX_BODY_BYTES", base.max_body_bytes),
            max_bundle_entries=_env_int("FHIR_MAX_BUNDLE_ENTRIES", base.max_bundle_entries),
            default_page_size=_env_int("FHIR_DEFAULT_PAGE_SIZE", base.default_page_size),
            max_page_size=_env_int("FHIR_MAX_PAGE_SIZE", base.max_page_size),
            profiles_dir=Path(os.environ.get("FHIR_PROFILES_DIR") or base.profiles_dir),
            auth_enabled=_env_bool("FHIR_AUTH_ENABLED", base.auth_enabled),
            auth_signing_key=os.environ.get("FHIR_AUTH_SIGNING_KEY") or None,
            auth_token_lifetime=_env_int("FHIR_AUTH_TOKEN_LIFETIME", base.auth_token_lifetime),
            auth_dev_issuer=_env_bool("FHIR_AUTH_DEV_ISSUER", base.auth_dev_issuer),
            auth_trusted_jwks_urls=_env_list("FHIR_AUTH_TRUSTED_JWKS_URLS"),
            auth_jwks_cache_seconds=_env_int("FHIR_AUTH_JWKS_CACHE_SECONDS", base.auth_jwks_cache_seconds),
            auth_key_cache_seconds=_env_int("FHIR_AUTH_KEY_CACHE_SECONDS", base.auth_key_cache_seconds),
            auth_oidc_issuer=os.environ.get("FHIR_AUTH_OIDC_ISSUER") or None,
            auth_oidc_jwks=os.environ.get("FHIR_AUTH_OIDC_JWKS_URL") or os.environ.get("FHIR_AUTH_OIDC_JWKS_FILE")
            or None,
            auth_oidc_audience=os.environ.get("FHIR_AUTH_OIDC_AUDIENCE") or None,
            subscription_sweep_seconds=float(os.environ.get("FHIR_SUBSCRIPTION_SWEEP_SECONDS")
                                             or base.subscription_sweep_seconds),
            subscription_max_backoff=_env_int("FHIR_SUBSCRIPTION_MAX_BACKOFF", base.subscription_max_backoff),
            subscription_allow_http=_env_bool("FHIR_SUBSCRIPTION_ALLOW_HTTP", base.subscription_allow_http),
            risk_recompute_seconds=float(os.environ.get("FHIR_RISK_RECOMPUTE_SECONDS") or base.risk_recompute_seconds),
            audit_enabled=_env_bool("FHIR_AUDIT_ENABLED", base.audit_enabled),
            audit_durable_reads=_env_bool("FHIR_AUDIT_DURABLE_READS", base.audit_durable_reads),
            access_policy_enabled=_env_bool("FHIR_ACCESS_POLICY_ENABLED", base.access_policy_enabled),
        )

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def base_path(self) -> str:
        """The URL path the FHIR API is mounted on, e.g. ``/fhir``."""
        after_scheme = self.base_url.split("://", 1)[-1]
        slash = after_scheme.find("/")
        return after_scheme[slash:].rstrip("/") if slash >= 0 else ""
