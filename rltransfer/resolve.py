"""Turn user-supplied names and parameter dicts into families and variants, with user-facing errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rltransfer.envs import FAMILIES, Family, Variant, get_family
from rltransfer.errors import UserError


def resolve_family(family: str | Family) -> Family:
    """A shipped family by name, a user family by ``module:ATTRIBUTE``, or a ``Family`` as it is."""
    if isinstance(family, Family):
        shipped = FAMILIES.get(family.name)
        if shipped is not None and shipped != family:
            # Manifests and hyperparameters go by name: a lookalike would be taken for the shipped one.
            raise UserError(f"family '{family.name}' is named like a shipped family; give yours another name")
        return family
    try:
        return get_family(family)
    except ValueError as e:
        raise UserError(str(e)) from None


def family_lineage(*families: Family) -> dict[str, Any]:
    """Manifest entries holding the user families' definitions (shipped ones are named by version)."""
    user = {f.name: f.to_dict() for f in families if FAMILIES.get(f.name) != f}
    return {"family_definitions": user} if user else {}


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
