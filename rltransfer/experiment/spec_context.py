"""Reading a spec: one-line errors that name the file and the line of the key at fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rltransfer.errors import UserError, did_you_mean
from rltransfer.hyperparam_bounds import whole_number


class SpecContext:
    """Where a spec came from (file, line numbers, directory): errors name the line of the key at fault."""

    def __init__(self, where: str, lines: dict[str, int], base: Path | None = None) -> None:
        self.where, self.lines, self.base = where, lines, base

    def fail(self, path: str, message: str) -> UserError:
        line = self.lines.get(path)
        at = f"{self.where}:{line}" if line else self.where
        return UserError(f"{at}: {message}")

    def check_keys(self, mapping: Any, allowed: set[str], path: str) -> dict[str, Any]:
        if not isinstance(mapping, dict):
            raise self.fail(path, f"'{path or 'spec'}' must be a mapping of keys to values")
        for key in mapping:
            if key not in allowed:
                raise self.fail(
                    f"{path}.{key}" if path else str(key),
                    f"unknown key '{key}'{' in ' + path if path else ''}{did_you_mean(str(key), allowed)}; "
                    f"allowed: {', '.join(sorted(allowed))}",
                )
        return mapping

    def positive_int(self, value: Any, path: str) -> int:
        count = whole_number(value)  # 300000, 3e5 (YAML reads it as text), !!float 3e5
        if count is None or count <= 0:
            raise self.fail(path, f"'{path}' must be a positive integer, got {value!r}")
        return count

    def given_once(self, path: str, value: Any, hyperparams: Any, key: str, hp_path: str) -> None:
        """Refuse a setting given both as ``path`` and as ``hp_path.key`` with another value (a budget of
        ``timesteps: 512`` beside ``hyperparams: {n_timesteps: 1e5}``: one would be dropped unseen)."""
        if value is None or not isinstance(hyperparams, dict) or key not in hyperparams:
            return
        if whole_number(value) != whole_number(hyperparams[key]):
            raise self.fail(
                path, f"'{path}' ({value}) and '{hp_path}.{key}' ({hyperparams[key]}) both set it; keep one"
            )
