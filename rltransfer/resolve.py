"""Turn user-supplied names and parameter dicts into families and variants, with user-facing errors."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rltransfer.envs import (
    FAMILIES,
    Family,
    ObsShift,
    Variant,
    get_family,
    split_env_id,
    split_short_id,
    user_family,
)
from rltransfer.errors import UserError
from rltransfer.io import sha256


def comma_items(text: str) -> list[str]:
    """``"long, longer"`` as ``["long", "longer"]``: a list given as text, as the command line's
    ``--targets`` and ``--sources`` take it (the Python API accepts the same)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def resolve_family(family: str | Family, base: Path | None = None) -> Family:
    """A shipped family by name, a user family by ``module:ATTRIBUTE`` or YAML file, or a ``Family``
    (a user's is registered and checked; one named like a shipped family is refused). ``base``: a
    spec's directory, where a relative family file or module is looked for too."""
    try:
        return user_family(family) if isinstance(family, Family) else get_family(family, base)
    except ValueError as e:
        raise UserError(str(e)) from None


def env_id_variant(text: str) -> tuple[Family, str] | None:
    """The family and variant name a Gymnasium id of rltransfer's names (``rltransfer/CartPole-long-v0``);
    ``None`` for other text."""
    try:
        return split_env_id(text)
    except ValueError as e:
        raise UserError(str(e)) from None


def named_variant(text: str) -> tuple[Family, str] | None:
    """The family and variant that ``text`` names as ``--targets`` does for another family: a
    Gymnasium id (``rltransfer/CartPole-long-v0``) or a shipped family's name and a variant's
    (``cartpole/long``); ``None`` for other text (a family's name, file or module)."""
    return env_id_variant(text) or split_short_id(text)


def split_target(text: str, family: Family) -> tuple[Family, str]:
    """The family and variant name a target names: ``long`` (of ``family``), ``acrobot/long1`` or a
    Gymnasium id (``rltransfer/Acrobot-long1-v0``)."""
    found = env_id_variant(text)
    if found is not None:
        return found
    if "/" in text:
        other, _, name = text.partition("/")
        return resolve_family(other), name
    return family, text


def user_families(*families: Family) -> dict[str, Family]:
    """The families among ``families`` that rltransfer does not ship, by name."""
    return {f.name: f for f in families if FAMILIES.get(f.name) != f}


def family_lineage(*families: Family) -> dict[str, Any]:
    """Manifest entries holding the user families' definitions and the SHA-256 of their modules'
    source files (shipped families are named by rltransfer's version)."""
    user = {
        name: {**f.to_dict(), "code_sha256": _code_digests(f), **_found_in(f)}
        for name, f in user_families(*families).items()
    }
    return {"family_definitions": user} if user else {}


def _found_in(family: Family) -> dict[str, str]:
    """``{"found_in": DIR}``: the directory ``family.ref`` was read from (the import root of its
    ``module:ATTRIBUTE``, the working directory of a relative file), so a run is loaded from
    another working directory too (``rltransfer.agent``); ``{}`` where there is none to record."""
    if not family.ref:
        return {}
    module, colon, _ = family.ref.partition(":")
    if not colon:  # a YAML file (``path`` or ``path#family``): relative to the working directory
        return {} if Path(family.ref).is_absolute() else {"found_in": str(Path.cwd())}
    found = importlib.util.find_spec(module) if module in sys.modules else None
    if found is None or not found.origin or not Path(found.origin).is_file():
        return {}
    origin, depth = Path(found.origin).resolve(), module.count(".")
    root = origin.parents[depth + 1] if origin.name == "__init__.py" else origin.parents[depth]
    return {"found_in": str(root)}


def _code_digests(family: Family) -> dict[str, str]:
    digests = {}
    for module in family.modules:
        found = importlib.util.find_spec(module)
        if found is not None and found.origin and Path(found.origin).is_file():
            digests[module] = sha256(Path(found.origin))
    return digests


def variant_record(family: Family, variant: Variant) -> dict[str, Any]:
    """A variant as a manifest records it (``recorded_variant`` reads it back)."""
    return {
        "name": variant.name,
        "distance": variant.distance,
        "params": family.resolve(variant.params),
        **({"shift": variant.shift.to_dict()} if variant.shift is not None else {}),
    }


def recorded_variant(
    family: Family,
    name: str,
    params: Mapping[str, Any],
    distance: str = "custom",
    shift: Mapping[str, Any] | None = None,
) -> Variant:
    """The variant a manifest records by name, parameter values and observation shift. A manifest
    written before shifts were recorded holds none: then the family's own variant of that name and
    values, with its shift, where the family still has it."""
    if shift is not None:
        return Variant(name, dict(params), distance, shift=ObsShift(**shift))
    registered = next((v for v in family.all_variants() if v.name == name), None)
    if registered is not None and family.resolve(registered.params) == family.resolve(params):
        return registered
    return Variant(name, dict(params), distance)


def resolve_variant(family: Family, variant: str | Variant | Mapping[str, float], name: str = "custom") -> Variant:
    """A registered variant by name, a ``Variant``, or a new one from parameter values."""
    try:
        if isinstance(variant, Variant):
            family.resolve(variant.params)
            return variant
        if isinstance(variant, str):
            return family.variant(variant)
        return family.custom(name, variant)
    except ValueError as e:
        raise UserError(str(e)) from None
