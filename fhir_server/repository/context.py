"""The explicit context every repository call runs with (who asks, for whom, why)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    base_url: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    client_id: str | None = None
    agency: str | None = None
    practitioner: str | None = None
    scopes: frozenset[str] = frozenset()
    purpose_of_use: str | None = None

    @classmethod
    def system(cls, base_url: str) -> "RequestContext":
        """Context for the server's own work (CLI, migrations, background jobs)."""
        return cls(base_url=base_url, client_id="system")
