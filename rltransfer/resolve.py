"""Turn user-supplied names and parameter dicts into families and variants, with user-facing errors."""

from __future__ import annotations

from collections.abc import Mapping

from rltransfer.envs import Family, Variant, get_family
from rltransfer.errors import UserError


def resolve_family(family: str | Family) -> Family:
    if isinstance(family, Family):
        return family
    try:
        return get_family(family)
    except ValueError as e:
        raise UserError(str(e)) from None


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
