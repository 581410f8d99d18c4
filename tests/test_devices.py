"""Device requests: checked before anything runs, ``auto`` as SB3 means it, recorded in manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch as th
import yaml
from specs import grid_spec

from rltransfer.devices import cpu_model, device_label, device_record, parse_device, resolve_device
from rltransfer.errors import UserError
from rltransfer.experiment.run import _with_device
from rltransfer.experiment.spec import load_spec, parse_spec


def gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Pretend this machine has ``count`` visible CUDA GPUs."""
    monkeypatch.setattr(th.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(th.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("text", ["cpu", "CPU", " cpu ", "cpu:0", "cuda", "cuda:3", "mps"])
def test_parse_accepts_torch_devices(text: str) -> None:
    assert parse_device(text) == th.device(text.strip().lower())


def test_parse_keeps_auto_unresolved() -> None:
    assert parse_device("auto") == "auto"
    assert parse_device("AUTO") == "auto"


@pytest.mark.parametrize(("text", "fragment"), [("gpu", "not a torch device"), ("cuda:x", "not a torch device"),
                                                ("meta", "trains on cpu, cuda or mps")])  # fmt: skip
def test_parse_rejects_with_the_fix(text: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as info:
        parse_device(text)
    assert "cpu (default), cuda, cuda:N or auto" in str(info.value)


def test_without_cuda_auto_is_cpu_and_cuda_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 0)
    assert resolve_device("auto") == th.device("cpu")
    assert resolve_device("cpu") == th.device("cpu")
    for text in ("cuda", "cuda:0"):
        with pytest.raises(UserError, match=f"--device {text}: CUDA is not available here") as info:
            resolve_device(text)
        assert "use --device cpu" in str(info.value)


def test_with_cuda_auto_is_cuda_and_indices_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 2)
    assert resolve_device("auto") == th.device("cuda")
    assert resolve_device("cuda:1") == th.device("cuda:1")
    with pytest.raises(UserError, match=r"2 visible GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_record_of_a_cpu_run_and_labels() -> None:
    # The CPU and its vector instructions: the same seed gives the same numbers where they are the same.
    record = device_record(th.device("cpu"))
    assert record == {"type": "cpu", "name": "cpu", "cpu": cpu_model(), "isa": th.backends.cpu.get_cpu_capability()}
    assert cpu_model() not in ("", "unknown") and record["isa"] in ("DEFAULT", "AVX2", "AVX512", "NO AVX", "SVE256")
    assert device_label(record) == f"cpu ({cpu_model()}, {record['isa']})"
    assert device_label({"type": "cpu", "name": "cpu"}) == "cpu"  # recorded before the CPU was
    assert device_label({"type": "cuda", "name": "cuda:1", "gpu": "NVIDIA H200"}) == "cuda:1 (NVIDIA H200)"
    assert device_label(None) == "not recorded"  # manifests written before devices were recorded


def test_spec_device_key_is_checked_and_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    raw = grid_spec("dev")
    plain = parse_spec(raw)
    assert plain.device == "cpu"
    on_gpu = parse_spec({**raw, "device": "cuda"})
    assert on_gpu.device == "cuda"
    # Where runs execute does not change what they measure: the two resume into each other.
    assert on_gpu.fingerprint() == plain.fingerprint()
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**raw, "device": "gpu"}, sort_keys=False))
    with pytest.raises(UserError, match=r"bad\.yaml:\d+: .*'gpu' is not a torch device"):
        load_spec(path)


def test_local_runs_get_this_machines_answer_for_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(grid_spec("dev"))
    gpus(monkeypatch, 0)
    assert _with_device(spec, "auto", "local", 0.0).device == "cpu"
    assert _with_device(parse_spec({**grid_spec("dev"), "device": "auto"}), None, "local", 0.0).device == "cpu"
    with pytest.raises(UserError, match="CUDA is not available"):
        _with_device(spec, "cuda", "local", 0.0)
    gpus(monkeypatch, 1)
    assert _with_device(spec, "auto", "local", 0.0).device == "cuda"
    assert _with_device(spec, None, "local", 0.0).device == "cpu"  # the default stays the CPU


def test_ray_runs_need_a_gpu_reservation_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_spec(grid_spec("dev"))
    gpus(monkeypatch, 0)  # the driver's own GPUs do not matter: the workers resolve the device
    with pytest.raises(UserError, match="--gpus-per-run > 0"):
        _with_device(spec, "cuda", "ray", 0.0)
    assert _with_device(spec, "cuda", "ray", 1.0).device == "cuda"
    assert _with_device(spec, "auto", "ray", 0.0).device == "auto"
