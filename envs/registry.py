"""The shipped families, the lookup of every family (users' by ``module:ATTRIBUTE`` or YAML file), registration."""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import replace
from operator import attrgetter
from pathlib import Path
from types import ModuleType

import yaml
from rltransfer.envs.acrobot import ACROBOT
from rltransfer.envs.cartpole import CARTPOLE
from rltransfer.envs.definition import DefinitionError, family_from_mapping
from rltransfer.envs.family import Family
from rltransfer.envs.hints import did_you_mean
from rltransfer.envs.lunar_lander import LUNAR_LANDER, LUNAR_LANDER_CONTINUOUS
from rltransfer.envs.mountain_car import MOUNTAIN_CAR
from rltransfer.envs.mountain_car_continuous import MOUNTAIN_CAR_CONTINUOUS
from rltransfer.envs.mujoco_families import HALF_CHEETAH, HOPPER, WALKER2D
from rltransfer.envs.pendulum import PENDULUM

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        CARTPOLE,
        ACROBOT,
        MOUNTAIN_CAR,
        PENDULUM,
        MOUNTAIN_CAR_CONTINUOUS,
        LUNAR_LANDER,
        LUNAR_LANDER_CONTINUOUS,
        HALF_CHEETAH,
        HOPPER,
        WALKER2D,
    )
}


def get_family(name: str, base: Path | None = None) -> Family:
    """A shipped family by its lower-case name (``cartpole``) or title (``CartPole``), or a user
    family by its import reference ``module:ATTRIBUTE`` (``load_family``) or YAML file (``read_family``);
    a relative file or a module not found otherwise is looked for in ``base`` too (a spec's directory)."""
    module_part, _, attr = name.partition(":")
    if module_part.endswith(".py"):  # a file path where a module is meant
        path = Path(module_part)
        if path.is_absolute():
            module, where = path.stem, f"with {path.parent} on PYTHONPATH"
        else:
            module, where = ".".join(path.with_suffix("").parts), "found from this directory"
        raise ValueError(
            f"'{name}' names a Python file; name its module and the Family in it instead: "
            f"{module}:{attr or 'ATTRIBUTE'} ({where})"
        )
    file, fragment, which = name.partition("#")  # ``spec.yaml#family``: the family a spec defines, as runs record it
    if file.endswith((".yaml", ".yml")) and (not fragment or which == "family"):
        path = Path(file)
        if not path.exists() and base is not None and (base / path).exists():
            path = base / path
        return read_family(path)
    if ":" in name:
        return load_family(name, base)
    key = _key(name)
    if key in FAMILIES:
        return FAMILIES[key]
    found = split_env_id(name)
    if found is not None:
        family, variant = found
        raise ValueError(
            f"'{name}' is the Gymnasium id of variant '{variant}' of family '{family.name}'; "
            f"name the family ({family.name}) and the variant where the command takes one"
        )
    short = split_short_id(name)
    if short is not None:
        raise ValueError(
            f"'{name}' is variant '{short[1]}' of family '{short[0].name}'; name the family ({short[0].name}) and "
            "the variant where the command takes one"
        )
    upstream = re.fullmatch(r"([A-Za-z0-9_.]+)-v\d+", name)
    if upstream is not None and upstream.group(1).lower() in FAMILIES:
        family = FAMILIES[upstream.group(1).lower()]
        raise ValueError(
            f"'{name}' is a Gymnasium id; rltransfer's family of {family.title} environments is "
            f"'{family.name}' (its source variant has the defaults, ids rltransfer/{family.title}-<variant>-v0)"
        )
    raise ValueError(
        f"unknown family '{name}'{did_you_mean(key, FAMILIES)}; choose one of: {', '.join(FAMILIES)}, "
        "or name your own as module:ATTRIBUTE (a rltransfer.envs.Family) or a YAML file defining one"
    )


def _key(name: str) -> str:
    """A shipped family's key in ``FAMILIES`` as a user may spell it (``CartPole``, ``mountain-car``)."""
    return name.lower().replace("-", "").replace("_", "")


def split_short_id(text: str) -> tuple[Family, str] | None:
    """The shipped family and variant name ``family/variant`` names (``cartpole/long``, as ``--targets``
    names another family's variant); ``None`` for any other text."""
    name, slash, variant = text.partition("/")
    return (FAMILIES[_key(name)], variant) if slash and variant and ":" not in text and _key(name) in FAMILIES else None


ENV_ID = re.compile(r"rltransfer/([A-Za-z0-9_.]+)-([A-Za-z0-9_.-]+)-v0")


def split_env_id(env_id: str) -> tuple[Family, str] | None:
    """The family and variant name of a Gymnasium id rltransfer registers (``rltransfer/CartPole-long-v0``,
    as ``rltransfer envs`` lists them); ``None`` for any other text. Families are shipped ones and
    user families loaded in this process."""
    match = ENV_ID.fullmatch(env_id)
    if match is None:
        return None
    title, variant = match.groups()
    for family in (*FAMILIES.values(), *_CHECKED.values()):
        if family.title == title:
            return family, variant
    raise ValueError(
        f"'{env_id}' names no family rltransfer knows (titles: {', '.join(f.title for f in FAMILIES.values())}); "
        "load your own family first (--family module:ATTRIBUTE or a YAML file)"
    )


def load_family(ref: str, base: Path | None = None) -> Family:
    """The ``Family`` at ``module:ATTRIBUTE`` (``mypkg.envs:ROBOT``), registered with Gymnasium.

    As ``uvicorn app:app`` does, the working directory (then ``base``, a spec's directory) is tried
    when the module is not importable otherwise, so a ``myfamily.py`` there works from the command
    line; worker processes inherit the path. The family remembers ``ref``, which manifests record.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"family reference '{ref}' must look like module:ATTRIBUTE, e.g. mypkg.envs:MY_FAMILY")
    module = _import(module_name, ref, [os.getcwd(), *_search_dirs(module_name, base)])
    try:
        obj = attrgetter(attr)(module)
    except AttributeError:
        raise ValueError(f"module '{module_name}' has no attribute '{attr}'; name a Family defined there") from None
    if not isinstance(obj, Family):
        raise ValueError(f"'{ref}' is a {type(obj).__name__}, not a rltransfer.envs.Family; point it at a Family")
    return user_family(obj if FAMILIES.get(obj.name) == obj else replace(obj, ref=ref))


def read_family(path: Path) -> Family:
    """The family a YAML file defines (``rltransfer.envs.definition``), or an experiment spec's
    ``family:`` definition, registered and checked."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read family file '{path}': {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"family file '{path}' is not a text file; pass a YAML file defining a family") from None
    except yaml.YAMLError as e:
        raise ValueError(
            f"family file '{path}' is malformed YAML ({getattr(e, 'problem', e)}); fix the syntax"
        ) from None
    ref = str(path)
    if isinstance(raw, dict) and "family" in raw and {"targets", "arms"} & set(raw):
        # An experiment spec: the family it defines (or names) is the one meant.
        if not isinstance(raw["family"], dict):
            raise ValueError(
                f"'{path}' is an experiment spec of family '{raw['family']}'; pass --family {raw['family']}"
            )
        raw, ref = raw["family"], f"{path}#family"  # the ref the spec's runs record for it
    try:
        family = family_from_mapping(raw, ref=ref)
    except DefinitionError as e:
        raise ValueError(f"{path}: {e}") from None
    return user_family(family)


def user_family(family: Family) -> Family:
    """``family`` registered with Gymnasium and checked, unless it is the shipped one of its name."""
    shipped = FAMILIES.get(family.name)
    if shipped is not None:
        if family == shipped or family == replace(shipped, ref=family.ref):
            return shipped
        raise ValueError(
            f"family '{family.ref or family.name}' is named '{family.name}' like a shipped family; give it another name"
        )
    if _CHECKED.get(id(family)) is not family:
        family.register()
        family.check()
        _CHECKED[id(family)] = family
    return family


# User families registered and checked in this process, by object (held, so ids are not reused):
# a spec resolves its family once per target, and each check builds the source environment.
_CHECKED: dict[int, Family] = {}


def _search_dirs(module_name: str, base: Path | None) -> list[str]:
    """Where else a spec's module is looked for: the spec's directory, and the nearest directory
    above it from which the dotted name leads to the file (``experiments.pointmass`` from a spec in
    ``experiments/``), so a spec runs from any working directory."""
    if base is None:
        return []
    base = base.resolve()
    parts = module_name.split(".")
    root = next((d for d in (base, *base.parents) if d.joinpath(*parts).with_suffix(".py").is_file()
                 or d.joinpath(*parts, "__init__.py").is_file()), None)  # fmt: skip
    return list(dict.fromkeys([str(base), *([str(root)] if root is not None else [])]))


def _import(module_name: str, ref: str, fallbacks: list[str]) -> ModuleType:
    """Import ``module_name``; while the module itself is missing, append the next of ``fallbacks``
    to the import path and try again."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # The module itself (or a package above it) is missing, not one of its dependencies.
        if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ValueError(f"importing '{module_name}' for family '{ref}' failed: {e}; install it") from None
    except Exception as e:  # the user's module raised while importing: say so on one line
        raise ValueError(f"importing '{module_name}' for family '{ref}' failed: {type(e).__name__}: {e}") from None
    for i, directory in enumerate(fallbacks):
        if directory not in sys.path:
            sys.path.append(directory)
            return _import(module_name, ref, fallbacks[i + 1 :])
    raise ValueError(
        f"cannot import module '{module_name}' for family '{ref}'; put it in the working directory or "
        "the spec's, add its directory to PYTHONPATH, or install it"
    )


def register_family(family: Family) -> None:
    """Register every variant of ``family`` (held-out ones included) as a Gymnasium id."""
    family.register()
