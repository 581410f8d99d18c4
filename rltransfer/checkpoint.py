"""Checkpoints: an SB3 zip plus ``manifest.json``; loading reads weights only, never pickles."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file

from rltransfer.errors import UserError
from rltransfer.io import MANIFEST_FILE, atomic_write_bytes, atomic_write_json, read_json, sha256
from rltransfer.vecnormalize_file import SavedNormalization, find_stats_file, read_file

MODEL_FILE = "model.zip"
SOURCE_OBS_FILE = "source_obs.npy"


@dataclass
class Checkpoint:
    """Weights and metadata of a PPO model, read without executing anything from the file.

    ``manifest`` is ``None`` for a plain SB3 zip (e.g. an RL Zoo agent); ``spaces`` holds what
    the zip's JSON says about its observation and action spaces (shape, n, bounds), read as
    text rather than unpickled.
    """

    path: Path
    state_dict: dict[str, th.Tensor]
    manifest: dict[str, Any] | None
    sha256: str
    spaces: dict[str, dict[str, Any]]
    # A plain zip's ``policy_kwargs`` as SB3's JSON spells them (classes as their repr).
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    # A plain zip trained inside ``VecNormalize``; the file saved with it, and what that file holds.
    trained_normalized: bool = False
    stats_file: Path | None = None
    vec_normalize: SavedNormalization | None = None
    # ``num_timesteps`` from the zip's JSON: the only record of how long a plain zip trained.
    zip_timesteps: int | None = None

    @property
    def trained_steps(self) -> int | None:
        """Env steps that went into this policy, what a transfer from it is charged: a source's
        pretraining; a fine-tuned run's own steps plus its source's; a distilled student's collected
        steps plus its teachers'. A plain zip: its own count (``None`` where it has none)."""
        manifest = self.manifest
        if manifest is None:
            return self.zip_timesteps
        if manifest.get("kind") == "distilled":
            curve = manifest.get("curve") or []
            teachers = sum(int(t.get("timesteps") or 0) for t in manifest.get("teachers") or [])
            return (int(curve[-1]["steps"]) if curve else 0) + teachers
        steps = manifest.get("timesteps", self.zip_timesteps)
        upstream = (manifest.get("source") or {}).get("timesteps") or 0  # a chain: A -> B, then B -> C
        return None if steps is None else int(steps) + int(upstream)

    @property
    def obs_normalization(self) -> dict[str, Any] | None:
        """Observation statistics the source policy was trained with: the manifest's, or for a plain
        zip those of the ``VecNormalize`` file saved beside it (``rltransfer.vecnormalize_file``)."""
        if self.manifest is not None:
            return self.manifest.get("obs_normalization")
        return None if self.vec_normalize is None else self.vec_normalize.obs_stats

    def source_observations(self) -> np.ndarray | None:
        """States the source policy visits (saved by ``rltransfer pretrain``), checksum-verified."""
        meta = (self.manifest or {}).get("source_observations")
        if not meta:
            return None
        path = self.path.parent / meta["file"]
        data = path.read_bytes() if path.exists() else b""
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise UserError(f"'{path}' is missing or does not match its checksum in the manifest; re-run pretraining")
        return np.load(io.BytesIO(data), allow_pickle=False)

    @property
    def has_trunk(self) -> bool:
        return any(k.startswith("features_extractor.trunk.") for k in self.state_dict)


def save_checkpoint(model: BaseAlgorithm, directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``model.zip`` then ``manifest.json`` (last, so its presence means complete)."""
    zip_path = directory / MODEL_FILE
    buf = io.BytesIO()
    model.save(buf)  # in memory: on a full disk torch's zip writer fails with a RuntimeError naming no file
    data = buf.getvalue()
    atomic_write_bytes(zip_path, data)
    atomic_write_json(directory / MANIFEST_FILE, {**manifest, "zip_sha256": hashlib.sha256(data).hexdigest()})
    return zip_path


def _resolve_zip(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        zip_path = path / MODEL_FILE
        manifest = path / MANIFEST_FILE
        if not zip_path.exists():
            raise UserError(f"'{path}' holds no {MODEL_FILE}; {missing_model_hint(path)}")
        return zip_path, manifest if manifest.exists() else None
    if not path.exists():
        raise UserError(f"checkpoint '{path}' does not exist; run `rltransfer pretrain` or pass an SB3 PPO .zip")
    beside = path.parent / MANIFEST_FILE
    return path, beside if path.name == MODEL_FILE and beside.exists() else None


def missing_model_hint(directory: Path, otherwise: str = "pass a checkpoint directory or an SB3 .zip") -> str:
    """What to pass instead of a directory without ``model.zip``: the zips in it (an RL Zoo run
    directory holds ``<EnvId>.zip`` and ``best_model.zip``; which one is the user's call), or the
    runs under it (an experiment's directory: its sources first)."""
    zips = sorted(str(z) for z in directory.glob("*.zip"))
    if zips:
        return f"pass one of its zips: {', '.join(zips)}"
    # Four levels down reach a per-target run of an experiment in a suite's root; deeper is not looked at,
    # so a directory such as ~ is not walked whole.
    found = [p.parent for depth in range(1, 5) for p in directory.glob("/".join(["*"] * depth + [MODEL_FILE]))]
    runs = sorted(found, key=lambda p: (p.parent.name != "source", p))
    if runs:
        return f"pass one run's directory: {', '.join(map(str, runs[:3]))}{', ...' if len(runs) > 3 else ''}"
    return otherwise


def _readable(entry: Any) -> dict[str, Any]:
    """The human-readable fields SB3 writes beside a pickled object in a zip's JSON (no unpickling)."""
    return {k: v for k, v in entry.items() if not k.startswith(":")} if isinstance(entry, dict) else {}


def _zip_json(archive: zipfile.ZipFile) -> dict[str, Any]:
    return json.loads(archive.read("data")) if "data" in archive.namelist() else {}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint directory or any SB3 PPO zip: weights via ``weights_only`` torch loading."""
    zip_path, manifest_path = _resolve_zip(Path(path))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            data = _zip_json(archive)
        _, params, _ = load_from_zip_file(zip_path, load_data=False, device="cpu")
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError, RuntimeError, EOFError, ValueError) as e:
        raise UserError(
            f"checkpoint '{zip_path}' is not a readable SB3 zip ({type(e).__name__}); re-create it with "
            "`rltransfer pretrain` or `model.save()`"
        ) from None
    if not params or "policy" not in params:
        raise UserError(f"checkpoint '{zip_path}' has no policy weights (policy.pth); is it an SB3 model zip?")
    manifest = None
    digest = sha256(zip_path)
    if manifest_path is not None:
        manifest = read_json(manifest_path, "restore it, or pretrain the source again")
        if manifest.get("zip_sha256") not in (None, digest):
            raise UserError(
                f"'{zip_path}' does not match the checksum in {manifest_path.name}; the zip was modified or "
                "corrupted: re-run pretraining or remove the stale manifest"
            )
    spaces: dict[str, dict[str, Any]] = {
        k: _readable(data[k]) for k in ("observation_space", "action_space") if k in data
    }
    steps = data.get("num_timesteps")
    zip_steps = int(steps) if isinstance(steps, int | float) else None
    if manifest is not None:
        return Checkpoint(zip_path, dict(params["policy"]), manifest, digest, spaces, zip_timesteps=zip_steps)
    # SB3 keeps the unnormalised last observation only when it trained inside VecNormalize.
    normalized = data.get("_last_original_obs") is not None
    stats_file = find_stats_file(zip_path) if normalized else None
    return Checkpoint(
        zip_path,
        dict(params["policy"]),
        None,
        digest,
        spaces,
        _readable(data.get("policy_kwargs")),
        normalized,
        stats_file,
        None if stats_file is None else read_file(stats_file),
        zip_steps,
    )
