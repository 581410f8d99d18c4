"""Hyperparameters from an RL Zoo YAML file (the Zoo's ``--conf-file``, e.g. ``hyperparams/ppo.yml``).

Such a file keys one block per environment id (``CartPole-v1: {n_envs: 8, ...}``); the block of a
family's environment is found by the id's name (``CartPole`` for the ``cartpole`` family, any
version or namespace; for a family written as data, the id it builds on), or by the family's own
name as ``rltransfer/ppo.yml`` keys it. ``FILE:KEY``
names a block, and a file that is itself one block of hyperparameters is taken whole.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rltransfer.envs import Family
from rltransfer.errors import UserError
from rltransfer.hyperparams import POLICY_KEYS, PPO_KEYS, RUN_KEYS, from_zoo, resolve_hyperparams
from rltransfer.resolve import resolve_family

# Keys that mark a file as one block of hyperparameters rather than a table of blocks.
_BLOCK_KEYS = PPO_KEYS | RUN_KEYS | POLICY_KEYS | {"policy", "policy_kwargs"}


def zoo_hyperparams(ref: str | Path, family: str | Family) -> dict[str, Any]:
    """The hyperparameters ``ref`` (``FILE`` or ``FILE:KEY``, an RL Zoo YAML file) holds for ``family``,
    for the ``hyperparams`` of ``pretrain``, ``finetune`` or a spec: ``pretrain("cartpole",
    hyperparams=zoo_hyperparams("hyperparams/ppo.yml", "cartpole"))``."""
    return zoo_file_block(ref, resolve_family(family))


def zoo_file_block(ref: str | Path, family: Family, base: Path | None = None) -> dict[str, Any]:
    """The hyperparameters ``ref`` (``FILE`` or ``FILE:KEY``) holds for ``family``, in rltransfer's
    terms (``from_zoo``). A relative ``FILE`` is looked for in the working directory, then in
    ``base`` (a spec's directory)."""
    path, key = _split(str(ref), base)
    try:
        table = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; pass an RL Zoo hyperparameter YAML file") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    if not isinstance(table, dict) or not table:
        raise UserError(f"{path} holds no mapping of hyperparameters; write 'EnvId: {{key: value, ...}}' blocks")
    if key is None and _BLOCK_KEYS & set(table):
        block, where = table, str(path)
    else:
        key = key if key is not None else _block_key(table, family, path)
        if key not in table:
            raise UserError(f"{path} has no block '{key}'; its blocks: {', '.join(map(str, table))}")
        block, where = table[key], f"{path}:{key}"
        if not isinstance(block, dict):
            raise UserError(f"{where} is {block!r}, not a block of hyperparameters; name a block of the file")
    try:
        resolve_hyperparams(family, block)  # every key and value checked now, named with the file's block
        return from_zoo(block)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _split(text: str, base: Path | None) -> tuple[Path, str | None]:
    """``FILE`` or ``FILE:KEY``, the file found in the working directory or under ``base``."""
    readings: list[tuple[str, str | None]] = [(text, None)]
    if ":" in text:
        name, block = text.rsplit(":", 1)
        readings.append((name, block))
    for file, key in readings:
        if Path(file).is_file():
            return Path(file), key
        if base is not None and (base / file).is_file():
            return base / file, key
    where = f" or in {base}" if base is not None else ""
    raise UserError(f"hyperparameter file '{readings[-1][0]}' not found here{where}; pass an RL Zoo YAML file")


def _block_key(table: dict[Any, Any], family: Family, path: Path) -> str:
    """The one block of ``table`` for ``family``: keyed by its environment's name (a family written as
    data: the Gymnasium id it builds on), or by its own name."""
    env = _env_name(family.base_id) if family.base_id else family.title
    found = [k for k in table if isinstance(k, str) and (k == family.name or _env_name(k) == env)]
    if len(found) == 1:
        return str(found[0])
    if found:
        raise UserError(
            f"{path} has several blocks for {family.name}: {', '.join(found)}; name one as {path}:{found[-1]}"
        )
    raise UserError(
        f"{path} has no block for {family.name} (keyed {env}-v<N> or {family.name}); its blocks: "
        f"{', '.join(map(str, table))}; name one as {path}:KEY"
    )


def _env_name(env_id: str) -> str:
    """``CartPole`` of ``CartPole-v1`` and of ``ns/CartPole-v0``."""
    return re.sub(r"-v\d+$", "", env_id.rsplit("/", 1)[-1])
