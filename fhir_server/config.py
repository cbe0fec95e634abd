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


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one server process (gunicorn worker, Celery worker or CLI)."""

    database_url: str = f"sqlite:///{DEFAULT_SQLITE_PATH}"
    # None means "no broker": post-commit work (outbox drain) runs in-process.
    broker_url: str | None = None
    # Public base of the FHIR endpoint, used in fullUrl, Location and paging links.
    base_url: str = "http://127.0.0.1:8080/fhir"
    max_body_bytes: int = 64 * 1024 * 1024
    max_bundle_entries: int = 20_000
    default_page_size: int = 20
    max_page_size: int = 1_000
    max_json_depth: int = 64
    profiles_dir: Path = field(default=REPO_ROOT / "profiles")
    testing: bool = False

    @classmethod
    def from_env(cls) -> "Settings":
        base = cls()
        return cls(
            database_url=os.environ.get("FHIR_DATABASE_URL") or base.database_url,
            broker_url=os.environ.get("FHIR_BROKER_URL") or None,
            base_url=(os.environ.get("FHIR_BASE_URL") or base.base_url).rstrip("/"),
            max_body_bytes=_env_int("FHIR_MAX_BODY_BYTES", base.max_body_bytes),
            max_bundle_entries=_env_int("FHIR_MAX_BUNDLE_ENTRIES", base.max_bundle_entries),
            default_page_size=_env_int("FHIR_DEFAULT_PAGE_SIZE", base.default_page_size),
            max_page_size=_env_int("FHIR_MAX_PAGE_SIZE", base.max_page_size),
            profiles_dir=Path(os.environ.get("FHIR_PROFILES_DIR") or base.profiles_dir),
        )

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def base_path(self) -> str:
        """The URL path the FHIR API is mounted on, e.g. ``/fhir``."""
        after_scheme = self.base_url.split("://", 1)[-1]
        slash = after_scheme.find("/")
        return after_scheme[slash:].rstrip("/") if slash >= 0 else ""
