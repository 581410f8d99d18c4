"""Weight transfer into the multi-task policy, and checkpoint loading that never unpickles."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shlex
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from rltransfer.envs import get_family
from rltransfer.policies import TRUNK_PREFIX, MultiTaskActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.save_util import load_from_zip_file

from rltransfer.checkpoint import Checkpoint, load_checkpoint
from rltransfer.errors import UserError
from rltransfer.finetuning import build_model, finetune
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.source_settings import source_architecture
from rltransfer.transfer import LayerMap, apply_transfer, parse_parts

TARGETS = ["long", "heavy", "longer"]
TRUNK_KEYS = [f"{TRUNK_PREFIX}{i}.{leaf}" for i in (0, 2) for leaf in ("weight", "bias")]


def target_policy(tiny: dict[str, Any], **overrides: Any) -> MultiTaskActorCriticPolicy:
    family = get_family("cartpole")
    hp = resolve_hyperparams("cartpole", {**tiny, **overrides})
    model = build_model(family, [family.variant(v) for v in TARGETS], hp, seed=1)
    model.get_env().close()
    policy = model.policy
    assert isinstance(policy, MultiTaskActorCriticPolicy)
    return policy


def snapshot(policy: th.nn.Module) -> dict[str, th.Tensor]:
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


def probe_obs(n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-0.3, 0.3, size=(n, 4)).astype(np.float32)


def task_outputs(policy: MultiTaskActorCriticPolicy, x: np.ndarray, task: int) -> tuple[th.Tensor, th.Tensor]:
    obs = {"obs": x, "task_id": np.full(len(x), task)}
    with th.no_grad():
        obs_t, _ = policy.obs_to_tensor(obs)
        return policy.get_distribution(obs_t).distribution.probs, policy.predict_values(obs_t)


def source_outputs(policy: Any, x: np.ndarray) -> tuple[th.Tensor, th.Tensor]:
    with th.no_grad():
        obs_t, _ = policy.obs_to_tensor(x)
        return policy.get_distribution(obs_t).distribution.probs, policy.predict_values(obs_t)


def test_trunk_copies_exactly_the_trunk(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    policy = target_policy(tiny)
    before = snapshot(policy)
    report = apply_transfer(policy, ckpt, parse_parts("trunk"))
    after = snapshot(policy)
    assert sorted(e.target for e in report.copied) == sorted(TRUNK_KEYS)
    assert all(e.source == e.target for e in report.copied)
    for key in TRUNK_KEYS:
        assert th.equal(after[key], ckpt.state_dict[key]), key
        assert not th.equal(before[key], after[key]), f"{key} was already equal: the test would prove nothing"
    for key in after:
        if key not in TRUNK_KEYS:
            assert th.equal(before[key], after[key]), f"{key} changed though only the trunk was selected"
    skipped = {e.source: e.reason for e in report.entries if e.status == "skipped"}
    for key in (
        "mlp_extractor.policy_net.0.weight",
        "mlp_extractor.value_net.0.weight",
        "action_net.weight",
        "value_net.weight",
    ):
        assert key in skipped and "not selected" in skipped[key]
    assert "alias" in skipped["pi_features_extractor.trunk.0.weight"]
    assert "alias" in skipped["vf_features_extractor.trunk.2.bias"]
    # Every source tensor is accounted for exactly once.
    assert sorted(e.source for e in report.entries) == sorted(ckpt.state_dict)
    assert set(report.fresh) == set(after) - set(TRUNK_KEYS)
    d = report.to_dict()
    assert d["n_copied"] == 4 and d["n_skipped"] == len(ckpt.state_dict) - 4
    json.dumps(d)  # serialisable for transfer_report.json
    summary = report.summary().splitlines()
    assert "  copied   features_extractor.trunk.0.weight -> features_extractor.trunk.0.weight (64, 4)" in summary
    # Skipped tensors: one line per module and reason (each tensor is in transfer_report.json).
    assert "  skipped  pi_features_extractor.trunk.* (4 tensors)  (alias of the shared features extractor)" in summary
    assert sum(line.startswith("  skipped") for line in summary) == 6
    fresh = "  fresh (random init): action_net, mlp_extractor.policy_heads.0, mlp_extractor.value_heads.0, value_net"
    assert fresh in summary  # by layer: its weight and bias on one name


def test_all_makes_every_task_equal_to_the_source(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    source = PPO.load(source_dir / "model.zip", device="cpu").policy
    policy = target_policy(tiny)
    report = apply_transfer(policy, ckpt, parse_parts("all"))
    assert report.fresh == []
    x = probe_obs()
    src_probs, src_values = source_outputs(source, x)
    for k in range(len(TARGETS)):
        probs, values = task_outputs(policy, x, k)
        th.testing.assert_close(probs, src_probs, rtol=1e-5, atol=1e-6)
        th.testing.assert_close(values, src_values, rtol=1e-5, atol=1e-5)
        th.testing.assert_close(
            policy.mlp_extractor.policy_heads[0].weight[k],
            ckpt.state_dict["mlp_extractor.policy_net.0.weight"],
            rtol=0,
            atol=0,
        )


def test_heads_into_selected_tasks_only(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    policy = target_policy(tiny)
    before = snapshot(policy)
    apply_transfer(policy, ckpt, parse_parts("heads"), tasks=[1])
    w = policy.mlp_extractor.policy_heads[0].weight
    assert th.equal(w[1], ckpt.state_dict["mlp_extractor.policy_net.0.weight"])
    assert th.equal(w[0], before["mlp_extractor.policy_heads.0.weight"][0])
    assert th.equal(w[2], before["mlp_extractor.policy_heads.0.weight"][2])


def test_no_action_preset_keeps_a_fresh_action_layer(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    policy = target_policy(tiny)
    before = snapshot(policy)
    report = apply_transfer(policy, ckpt, parse_parts("no-action"))
    assert "action_net.weight" in report.fresh and "action_net.bias" in report.fresh
    assert th.equal(policy.action_net.weight, before["action_net.weight"])
    assert th.equal(policy.mlp_extractor.value_heads[0].weight[2], ckpt.state_dict["mlp_extractor.value_net.0.weight"])


@pytest.fixture(scope="module")
def plain_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plain") / "ppo_cartpole.zip"
    model = PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=32, batch_size=32, n_epochs=1, device="cpu")
    model.learn(64)
    model.save(path)
    return path


def test_plain_sb3_zip_is_a_source(plain_zip: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(plain_zip)
    assert ckpt.manifest is None and not ckpt.has_trunk
    arch = source_architecture(ckpt)
    # SB3's MlpPolicy default activation, and raw observations (no VecNormalize): both bind the targets.
    assert arch == {
        "trunk_arch": [64, 64],
        "head_arch": {"pi": [], "vf": []},
        "activation_fn": "tanh",
        "normalize": False,
    }
    policy = target_policy(tiny, **arch)
    report = apply_transfer(policy, ckpt, parse_parts("trunk"))
    sd = ckpt.state_dict
    for i in (0, 2):
        for leaf in ("weight", "bias"):
            assert th.equal(
                policy.state_dict()[f"{TRUNK_PREFIX}{i}.{leaf}"], sd[f"mlp_extractor.policy_net.{i}.{leaf}"]
            )
    mapped = {e.source: e.target for e in report.copied}
    assert mapped == {
        f"mlp_extractor.policy_net.{i}.{leaf}": f"{TRUNK_PREFIX}{i}.{leaf}"
        for i in (0, 2)
        for leaf in ("weight", "bias")
    }
    skipped = {e.source for e in report.entries if e.status == "skipped"}
    assert {k for k in sd if k.startswith("mlp_extractor.value_net.")} <= skipped
    assert ckpt.spaces["observation_space"]["_shape"] == [4]


def test_plain_sb3_zip_all_parts_reproduces_its_actor(plain_zip: Path, tiny: dict[str, Any]) -> None:
    """Zero-shot's default ('all') from an RL Zoo-style zip: actor copied, critic hidden layers skipped."""
    ckpt = load_checkpoint(plain_zip)
    policy = target_policy(tiny, **source_architecture(ckpt))
    report = apply_transfer(policy, ckpt, parse_parts("all"))
    reasons = {e.source: e.reason for e in report.entries if e.status == "skipped"}
    assert all("critic" in reasons[k] for k in ckpt.state_dict if k.startswith("mlp_extractor.value_net."))
    source = PPO.load(plain_zip, device="cpu").policy
    x = probe_obs()
    src_probs, _ = source_outputs(source, x)
    for k in range(len(TARGETS)):
        probs, _ = task_outputs(policy, x, k)
        th.testing.assert_close(probs, src_probs, rtol=1e-5, atol=1e-6)


def test_finetune_from_plain_zip(plain_zip: Path, tiny: dict[str, Any]) -> None:
    result = finetune("cartpole", ["long"], plain_zip, "freeze", seed=0, timesteps=64, hyperparams=tiny)
    sd = load_checkpoint(plain_zip).state_dict
    trunk = result.model.policy.features_extractor.trunk
    assert th.equal(trunk[0].weight, sd["mlp_extractor.policy_net.0.weight"])
    assert result.report is not None and len(result.report.copied) == 4


def test_shape_mismatch_names_both_shapes(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    policy = target_policy(tiny, trunk_arch=[32, 32])
    before = snapshot(policy)
    with pytest.raises(UserError, match=r"\(64, 4\).*\(32, 4\)") as info:
        apply_transfer(policy, ckpt, parse_parts("trunk"))
    assert "features_extractor.trunk.0.weight" in str(info.value)
    after = snapshot(policy)
    assert all(th.equal(before[k], after[k]) for k in before), "a failed transfer must not half-copy"
    # The user's architecture wins over the source's, so finetune reports the same error.
    with pytest.raises(UserError, match="shape mismatch"):
        finetune(
            "cartpole", ["long"], source_dir, "finetune", timesteps=64, hyperparams={**tiny, "trunk_arch": [32, 32]}
        )


def test_layer_count_mismatch(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    policy = target_policy(tiny, trunk_arch=[64])
    with pytest.raises(UserError, match=r"2 layers, target trunk has 1"):
        apply_transfer(policy, ckpt, parse_parts("trunk"))


def test_unplaced_tensor_raises_unless_skipped(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    extra = {**ckpt.state_dict, "rnd_net.0.weight": th.zeros(3, 4)}
    crafted = Checkpoint(ckpt.path, extra, ckpt.manifest, ckpt.sha256, ckpt.spaces)
    with pytest.raises(UserError, match=r"rnd_net\.0\.weight.*\(3, 4\).*skip"):
        apply_transfer(target_policy(tiny), crafted, parse_parts("trunk"))
    report = apply_transfer(target_policy(tiny), crafted, parse_parts("trunk"), LayerMap(skip=("rnd_net.*",)))
    entry = next(e for e in report.entries if e.source == "rnd_net.0.weight")
    assert entry.status == "skipped" and "layer map" in entry.reason
    assert len(report.copied) == 4


def test_layer_map_trunk_from_must_match(source_dir: Path, tiny: dict[str, Any]) -> None:
    ckpt = load_checkpoint(source_dir)
    with pytest.raises(UserError, match="matches no source tensor"):
        apply_transfer(target_policy(tiny), ckpt, parse_parts("trunk"), LayerMap(trunk_from="nope"))


def test_source_without_hidden_layers_is_refused(tmp_path: Path, tiny: dict[str, Any]) -> None:
    # net_arch=[]: nothing to transfer, so the error must not point at layer_map's trunk_from.
    model = PPO("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": []}, n_steps=32, batch_size=32, device="cpu")
    model.save(tmp_path / "flat.zip")
    with pytest.raises(UserError, match=r"no hidden layers at all \(trained with net_arch=\[\]") as err:
        apply_transfer(target_policy(tiny), load_checkpoint(tmp_path / "flat.zip"), parse_parts("trunk"))
    assert "trunk_from" not in str(err.value)


@pytest.mark.parametrize("spec", ["nope", "pi_head", "trunk+bogus"])
def test_parse_parts_errors(spec: str) -> None:
    with pytest.raises(UserError):
        parse_parts(spec)


def test_parse_parts_presets() -> None:
    assert parse_parts("none") == frozenset()
    assert parse_parts("trunk+log_std") == {"trunk", "log_std"}
    assert parse_parts(["trunk", "action"]) == {"trunk", "action"}
    assert parse_parts("all") == {"trunk", "pi_head", "action", "vf_head", "log_std"}
    assert "action" not in parse_parts("no-action")


# --- checkpoint loading -------------------------------------------------------------------


class _Exploit:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _rewrite_data(src: Path, dst: Path, edit: Any) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            payload = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(payload)
                edit(data)
                payload = json.dumps(data, indent=4).encode()
            zout.writestr(item, payload)


def test_load_checkpoint_never_unpickles(tmp_path: Path) -> None:
    model = PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=32, batch_size=32, device="cpu")
    model.save(tmp_path / "honest.zip")
    marker = tmp_path / "pwned"
    evil_payload = base64.b64encode(pickle.dumps(_Exploit(marker))).decode()
    edited: list[str] = []

    def poison(data: dict[str, Any]) -> None:
        for key in ("observation_space", "action_space", "policy_class"):
            entry = data[key]
            assert ":serialized:" in entry
            entry[":serialized:"] = evil_payload
            edited.append(key)

    evil = tmp_path / "evil.zip"
    _rewrite_data(tmp_path / "honest.zip", evil, poison)
    assert edited

    ckpt = load_checkpoint(evil)
    assert not marker.exists(), "load_checkpoint executed a pickle from the zip"
    assert "mlp_extractor.policy_net.0.weight" in ckpt.state_dict
    assert int(ckpt.spaces["action_space"]["n"]) == 2  # read from the JSON text, not unpickled
    honest = load_checkpoint(tmp_path / "honest.zip")
    assert all(th.equal(honest.state_dict[k], ckpt.state_dict[k]) for k in honest.state_dict)
    assert not marker.exists()

    # Sanity: the crafted zip really is malicious for SB3's own loader.
    load_from_zip_file(evil, load_data=True, device="cpu")
    assert marker.exists(), "the crafted zip is not malicious, so the test above proves nothing"


def test_corrupted_zip_raises_user_error(source_dir: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"definitely not a zip file" * 10)
    with pytest.raises(UserError, match="not a readable SB3 zip"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.zip"
    data = (source_dir / "model.zip").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError):
        load_checkpoint(truncated)
    no_policy = tmp_path / "no_policy.zip"
    with zipfile.ZipFile(no_policy, "w") as z:
        z.writestr("data", "{}")
    with pytest.raises(UserError, match="no policy weights"):
        load_checkpoint(no_policy)


def test_missing_checkpoint_raises_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.zip")
    with pytest.raises(UserError, match=r"holds no model\.zip; pass a checkpoint directory"):
        load_checkpoint(tmp_path)
    # An RL Zoo run directory: its zips are named, since which one is meant is the user's call.
    for name in ("CartPole-v1.zip", "best_model.zip"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(UserError, match=r"holds no model\.zip; pass one of its zips: .*CartPole-v1\.zip, .*best_model"):
        load_checkpoint(tmp_path)
    # An experiment's directory: the runs under it, its sources first.
    grid = tmp_path / "grid"
    for run in ("finetune/seed0", "finetune/seed1", "source/seed1", "source/seed0"):
        (grid / run).mkdir(parents=True)
        (grid / run / "model.zip").write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_checkpoint(grid)
    runs = ", ".join(str(grid / r) for r in ("source/seed0", "source/seed1", "finetune/seed0"))
    assert str(err.value).endswith(f"holds no model.zip; pass one run's directory: {runs}, ...")


def test_manifest_checksum_mismatch_raises(source_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    copy.mkdir()
    (copy / "model.zip").write_bytes((source_dir / "model.zip").read_bytes())
    manifest = json.loads((source_dir / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_checkpoint(copy).manifest == manifest  # the honest copy loads
    manifest["zip_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(copy)
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(copy / "model.zip")  # the manifest beside a model.zip is checked too


def test_modified_zip_fails_its_manifest_checksum(source_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt"
    copy.mkdir()
    (copy / "manifest.json").write_text((source_dir / "manifest.json").read_text())
    _rewrite_data(source_dir / "model.zip", copy / "model.zip", lambda data: data.update(n_steps=999))
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(copy)


def test_no_trunk_found_names_where_the_layers_are(source_dir: Path, tiny: dict[str, Any]) -> None:
    """A DQN-like zip: the error lists the numbered layers' prefixes and the option that names one."""
    ckpt = load_checkpoint(source_dir)
    qnet = {f"q_net.q_net.{i}.{leaf}": th.zeros(2) for i in (0, 2, 4) for leaf in ("weight", "bias")}
    crafted = Checkpoint(ckpt.path, qnet, ckpt.manifest, ckpt.sha256, ckpt.spaces)
    with pytest.raises(UserError, match=r"under q_net\.q_net\.\); name the trunk with the option layer_map"):
        apply_transfer(target_policy(tiny), crafted, parse_parts("trunk"))


def test_a_bound_setting_given_explicitly_is_kept_and_noted(source_dir: Path, tiny: dict[str, Any]) -> None:
    # The source trained on raw observations; normalising the targets is the user's explicit call.
    result = finetune("cartpole", ["long"], source_dir, "finetune", seed=0, timesteps=64, hyperparams=tiny)
    assert result.report is not None and not any("differs from the source" in n for n in result.report.notes)
    explicit = {**tiny, "normalize": True}
    result = finetune("cartpole", ["long"], source_dir, "finetune", seed=0, timesteps=64, hyperparams=explicit)
    assert result.report is not None
    assert (
        "normalize={'norm_obs': True, 'norm_reward': True} differs from the source's False: set explicitly, "
        "so kept" in result.report.notes
    )
