"""Which torch device a run trains on: checked up front, recorded in its manifest.

SB3's ``get_device("cuda")`` quietly falls back to the CPU where CUDA is missing, so a run
asked to train on a GPU could train on the CPU without a word. Here the request is checked
before anything is written: ``auto`` picks CUDA where it is available (SB3's meaning), an
explicit accelerator that is not there is an error naming the fix.
"""

from __future__ import annotations

import functools
import platform
from typing import Any, Literal

import torch as th

from rltransfer.errors import UserError

DEVICE_HELP = "cpu (default), cuda, cuda:N or auto (cuda where available, else cpu)"


def parse_device(device: str | th.device) -> th.device | Literal["auto"]:
    """``device`` as a ``torch.device``, or ``"auto"`` (see ``resolve_device``), checking its syntax only.

    For a driver that hands the device to other machines (Ray workers) whose accelerators it
    cannot see.
    """
    text = str(device).strip().lower()
    if text == "auto":
        return "auto"
    try:
        parsed = th.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"--device '{device}' is not a torch device; use {DEVICE_HELP}") from None
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device '{device}': rltransfer trains on cpu, cuda or mps; use {DEVICE_HELP}")
    return parsed


def resolve_device(device: str | th.device) -> th.device:
    """The device a run on this machine trains on; an error where the requested accelerator is missing.

    ``auto``: ``cuda`` where available, else ``cpu``. ``cuda``/``cuda:N`` need a CUDA build of
    torch and a visible GPU N (``CUDA_VISIBLE_DEVICES`` and Ray's GPU reservation decide which
    are visible); ``mps`` needs Apple's backend.
    """
    parsed = parse_device(device)
    if parsed == "auto":
        return th.device("cuda") if th.cuda.is_available() else th.device("cpu")
    if parsed.type == "cuda":
        if not th.cuda.is_available():
            build = "a CPU-only build" if th.version.cuda is None else f"CUDA {th.version.cuda}, but no GPU is visible"
            raise UserError(
                f"--device {device}: CUDA is not available here (torch {th.__version__}: {build}); "
                "use --device cpu, or --device auto to take a GPU only where there is one"
            )
        count = th.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise UserError(f"--device {device}: this machine has {count} visible GPU(s) (cuda:0 to cuda:{count - 1})")
    if parsed.type == "mps" and not th.backends.mps.is_available():
        raise UserError(f"--device {device}: Apple's MPS backend is not available here; use --device cpu")
    return parsed


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``, else ``platform``), or ``unknown``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_record(device: th.device) -> dict[str, Any]:
    """What a manifest records of the device a run trained on: the GPU's name for CUDA; for the CPU its
    model and the vector instructions torch uses, since the same seed gives the same numbers only where
    the kernels are the same (torch's MKL and ATen pick theirs by CPU: an AVX-512 machine's last bits
    differ from an AVX2 one's, and the difference grows over training)."""
    record: dict[str, Any] = {"type": device.type, "name": str(device)}
    if device.type == "cpu":
        record["cpu"] = cpu_model()
        record["isa"] = th.backends.cpu.get_cpu_capability()
    if device.type == "cuda":
        index = device.index if device.index is not None else th.cuda.current_device()
        record["gpu"] = th.cuda.get_device_name(index)
        record["cuda"] = th.version.cuda
    return record


def device_label(record: dict[str, Any] | None) -> str:
    """A manifest's device record in a few words: ``cpu``, ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if not record:
        return "not recorded"
    if record.get("gpu"):
        return f"{record['name']} ({record['gpu']})"
    if record.get("cpu"):  # recorded since the CPU's model and instructions were
        return f"{record['name']} ({record['cpu']}, {record['isa']})"
    return str(record["name"])
