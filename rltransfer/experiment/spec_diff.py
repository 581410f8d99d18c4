"""What differs between the spec a grid directory records and the spec run on it, for its error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_ABSENT = object()


def spec_differences(recorded: Mapping[str, Any], raw: Mapping[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """``key: old -> new`` for every value (by dotted key path) that differs between two raw specs,
    top-level keys in ``skip`` left out. Compared as JSON holds them (the record's own types)."""
    new = json.loads(json.dumps(dict(raw), default=str))
    old = {k: v for k, v in recorded.items() if k not in skip}
    return _diff(old, {k: v for k, v in new.items() if k not in skip}, "")


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in _diff(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{path}{k}.")]
    if old == new:
        return []
    return [f"{path.rstrip('.')}: {_shown(old)} -> {_shown(new)}"]


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value, sort_keys=True)
