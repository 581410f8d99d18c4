"""RL Zoo-style PPO hyperparameters: load from YAML, apply overrides, turn into SB3 kwargs."""

from __future__ import annotations

import ast
import copy
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

import yaml
from stable_baselines3 import PPO
from torch import nn

from rltransfer.envs import FAMILIES, Family
from rltransfer.errors import MinibatchWarning, NoLearningWarning, RltransferWarning, UserError, did_you_mean
from rltransfer.hyperparam_bounds import POSITIVE_INTS, check_values, whole_number
from rltransfer.normalization import canonical


def whole_rollouts(budget: int, rollout: int) -> int:
    """The env steps PPO takes for a ``budget``: it collects whole rollouts of ``rollout`` steps
    (``n_steps`` x all sub-envs), so a budget that is no multiple of one is rounded up."""
    return -(-budget // rollout) * rollout


def learning_updates(learning_rate: Any, budget: int, rollout: int) -> int:
    """How many of PPO's updates over ``budget`` env steps have a learning rate above 0.

    SB3 updates after each whole rollout at the rate its schedule gives for the progress left then,
    ``1 - steps / budget``: a ``lin_`` schedule is 0 from the budget on, so the update after the
    rollout that reaches it changes nothing, and a budget of one rollout learns nothing at all.
    """
    return sum(rate > 0 for rate in _update_rates(learning_rate, budget, rollout))


def _update_rates(learning_rate: Any, budget: int, rollout: int) -> Iterator[float]:
    """The learning rate of each of PPO's updates over ``budget`` env steps, first to last."""
    rate = schedule(learning_rate, "learning_rate")
    for k in range(1, whole_rollouts(budget, rollout) // rollout + 1):
        yield rate(1.0 - k * rollout / budget) if callable(rate) else rate


def no_learning(learning_rate: Any, budget: int, n_steps: int, envs: int) -> str | None:
    """Why no update of a run of ``budget`` env steps on ``envs`` sub-envs would learn (a ``lin_`` rate
    at 0 by the first update), or ``None`` when one does."""
    rollout = n_steps * envs
    if any(rate > 0 for rate in _update_rates(learning_rate, budget, rollout)):
        return None
    name = learning_rate if isinstance(learning_rate, str | _Linear | float | int) else "its schedule"
    n = whole_rollouts(budget, rollout) // rollout
    if n > 1:  # a schedule of the user's own that is never above 0
        return f"no update learns: learning_rate {name} is not above 0 at any of the {n} updates"
    return (
        f"no update learns: {budget:,} env steps are one rollout ({rollout:,}: n_steps {n_steps} x {envs} "
        f"sub-envs), and learning_rate {name} is 0 by the update that follows it; give more than {rollout:,} "
        "steps (or a constant learning_rate)"
    )


def ppo_value(hp: Mapping[str, Any], key: str) -> Any:
    """``hp[key]``, or PPO's own default where ``hp`` leaves it to PPO (a family block without ``batch_size``)."""
    return hp[key] if key in hp else inspect.signature(PPO.__init__).parameters[key].default


def truncated_minibatch(batch_size: int, n_steps: int, envs: int) -> str | None:
    """Why PPO's minibatches of ``batch_size`` would not divide a rollout (``n_steps`` x ``envs``), or ``None``."""
    rollout = n_steps * envs
    rest = rollout % batch_size
    if rest == 0:
        return None
    where = f"a rollout of {rollout:,} (n_steps {n_steps} x {envs} sub-envs)"
    if batch_size > rollout:
        return f"batch_size {batch_size} is above {where}: every epoch is one minibatch of {rollout:,}"
    return (
        f"batch_size {batch_size} does not divide {where}: every epoch ends with a minibatch of {rest}; "
        f"a factor of {rollout:,} avoids it"
    )


def run_warnings(
    learning_rate: Any, batch_size: int, budget: int, n_steps: int, envs: int
) -> list[tuple[str, type[RltransferWarning]]]:
    """What a run of ``budget`` env steps on ``envs`` sub-envs would not do as meant, with the warning
    to say it as: the one list a single run (``training.learn``) and a grid's runner check."""
    found = [
        (no_learning(learning_rate, budget, n_steps, envs), NoLearningWarning),
        (truncated_minibatch(batch_size, n_steps, envs), MinibatchWarning),
    ]
    return [(why, category) for why, category in found if why is not None]


ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}
# Keys that are ours, not PPO's.
RUN_KEYS = {
    "n_timesteps",
    "n_envs",
    "trunk_arch",
    "head_arch",
    "activation_fn",
    "eval_freq",
    "eval_episodes",
    "normalize",
}
# SB3 ``ActorCriticPolicy`` options passed on to every policy rltransfer builds (the RL Zoo's
# ``policy_kwargs`` for its Gaussian configs set them).
POLICY_KEYS = {"log_std_init", "ortho_init"}
RUN_KEYS |= POLICY_KEYS
PPO_KEYS = set(inspect.signature(PPO.__init__).parameters) - {
    "self",
    "policy",
    "env",
    "policy_kwargs",
    "seed",
}
# Passed by rltransfer itself; a user value would be silently ignored, so refuse it.
RESERVED = {"tensorboard_log", "verbose", "device", "_init_setup_model"}


def default_hyperparams(family: str | Family) -> dict[str, Any]:
    """The hyperparameters for ``family``: its block of ``rltransfer/ppo.yml`` for a shipped family;
    for a user family, the file's ``default`` block updated by ``Family.hyperparams``."""
    table = _shipped_table()
    if isinstance(family, str):
        if family not in FAMILIES:
            raise UserError(f"no PPO hyperparameters for family '{family}'; pass the Family itself")
        block = table[family]
    elif FAMILIES.get(family.name) == family:
        block = table[family.name]
    else:
        block = {**table["default"], **family.hyperparams}
    return copy.deepcopy(block)  # callers may change nested values (trunk_arch lists); the cache must not


@functools.cache
def _shipped_table() -> dict[str, dict[str, Any]]:
    """``rltransfer/ppo.yml``, parsed once per process: pure-Python YAML takes ~8 ms, and every run
    and every advice evaluation resolves its hyperparameters."""
    table: dict[str, dict[str, Any]] = yaml.safe_load(resources.files("rltransfer").joinpath("ppo.yml").read_text())
    return table


def from_zoo(block: Mapping[str, Any]) -> dict[str, Any]:
    """An RL Zoo hyperparameter block in rltransfer's terms, where it has them.

    ``policy: MlpPolicy`` is what rltransfer trains anyway (dropped); the Zoo's ``normalize`` written
    as a Python dict literal (``"{'norm_obs': True, 'norm_reward': False}"``) becomes that mapping;
    ``policy_kwargs`` (the Zoo's ``"dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU)"``
    string, or a mapping) becomes ``log_std_init``, ``ortho_init``, ``activation_fn`` and, from
    ``net_arch``, ``trunk_arch``/``head_arch`` (``_architecture``). Other policies and other policy
    options are refused, naming the keys to write instead.
    """
    hp = dict(block)
    policy = hp.pop("policy", "MlpPolicy")
    if policy != "MlpPolicy":
        raise UserError(
            f"policy '{policy}': rltransfer trains its own MLP policy (a shared trunk, per-task heads); "
            "remove 'policy' or set it to MlpPolicy"
        )
    if "policy_kwargs" in hp:
        options = _policy_kwargs(hp.pop("policy_kwargs"))
        both = sorted(set(options) & set(hp))
        if both:
            raise UserError(f"{', '.join(both)} set both in policy_kwargs and as keys; keep one")
        hp.update(options)
    normalize = hp.get("normalize")
    if isinstance(normalize, str) and normalize.lstrip().startswith("{"):
        try:
            hp["normalize"] = ast.literal_eval(normalize)
        except (ValueError, SyntaxError):
            raise UserError(f"normalize {normalize!r} is no dict literal; write it as a mapping") from None
    return hp


def _policy_kwargs(value: Any) -> dict[str, Any]:
    """The Zoo's ``policy_kwargs`` (a ``dict(...)`` string or a mapping) as rltransfer's keys."""
    if isinstance(value, str):
        try:
            call = ast.parse(value.strip(), mode="eval").body
        except SyntaxError:
            call = None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "dict"):
            raise UserError(f"policy_kwargs {value!r} is not a dict(...) expression; write it as a mapping")
        value = {kw.arg: _zoo_value(kw.value) for kw in call.keywords}
    if not isinstance(value, Mapping):
        raise UserError(f"policy_kwargs must be a mapping or a dict(...) string, got {value!r}")
    out = {}
    for key, option in value.items():
        if key == "activation_fn":
            name = str(option).rsplit(".", 1)[-1].lower()  # nn.ReLU, th.nn.ReLU, relu
            if name not in ACTIVATIONS:
                raise UserError(f"policy_kwargs.activation_fn {option!r} unknown; choose one of {sorted(ACTIVATIONS)}")
            out["activation_fn"] = name
        elif key in POLICY_KEYS:
            out[key] = option
        elif key == "net_arch":
            out.update(_architecture(option))
        else:
            raise UserError(f"policy_kwargs.{key} is not supported; rltransfer passes on {sorted(POLICY_KEYS)}")
    return out


def _architecture(net_arch: Any) -> dict[str, Any]:
    """SB3's ``net_arch`` as rltransfer's shared trunk and per-task heads: shared layers (the old
    ``[64, dict(pi=[32], vf=[32])]``) become the trunk and ``pi``/``vf`` the heads; without shared
    layers, equal ``pi`` and ``vf`` (``dict(pi=[256, 256], vf=[256, 256])``, ``[64, 64]``) become the
    trunk under linear heads, as a plain SB3 zip's actor layers do when it is a source."""
    layers = list(net_arch) if isinstance(net_arch, list | tuple) else [net_arch]
    shared = [w for w in layers if not isinstance(w, dict)]
    split = [w for w in layers if isinstance(w, dict)]
    heads = split[0] if split else {}
    pi, vf = list(heads.get("pi", [])), list(heads.get("vf", []))
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in [*shared, *pi, *vf]) or (
        len(split) > 1 or set(heads) - {"pi", "vf"} or (split and layers[-1] is not heads)
    ):
        raise UserError(
            f"policy_kwargs.net_arch {net_arch!r} is not an SB3 MLP architecture; write trunk_arch/head_arch"
        )
    if shared:
        return {"trunk_arch": shared, "head_arch": {"pi": pi, "vf": vf}}
    if pi != vf:
        raise UserError(
            f"policy_kwargs.net_arch {net_arch!r}: separate actor and critic networks of different sizes have no "
            "shared layers to transfer; write trunk_arch and head_arch instead (e.g. trunk_arch: [256, 256], "
            "head_arch: {pi: [], vf: []})"
        )
    return {"trunk_arch": pi, "head_arch": {"pi": [], "vf": []}}


def _zoo_value(node: ast.expr) -> Any:
    """A keyword's value in the Zoo's ``dict(...)``: a literal, or a dotted name (``nn.ReLU``) as text."""
    if isinstance(node, ast.Name | ast.Attribute):
        return ast.unparse(node)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _zoo_value(kw.value) for kw in node.keywords}  # net_arch=dict(pi=[...], vf=[...])
    if isinstance(node, ast.List | ast.Tuple):
        return [_zoo_value(item) for item in node.elts]  # net_arch=[dict(pi=[...], vf=[...])]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise UserError(f"policy_kwargs value {ast.unparse(node)!r} is not a literal; write the value itself") from None


def policy_options(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The SB3 policy options ``hp`` sets (``log_std_init``, ``ortho_init``), for ``policy_kwargs``."""
    return {key: hp[key] for key in sorted(POLICY_KEYS) if key in hp}


OVERRIDE_EXAMPLES = {"--hp": "n_steps=64", "--param": "length=0.8", "--option": "coef=0.01"}


def parse_override(text: str, flag: str = "--hp") -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``n_steps=64``, ``learning_rate=lin_3e-4``); ``flag``
    names the option it came with (``--hp``, ``--param``, ``--option``) in the error."""
    if "=" not in text:
        raise UserError(f"{flag} '{text}' must look like KEY=VALUE, e.g. {flag} {OVERRIDE_EXAMPLES[flag]}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise UserError(f"cannot parse the value of override '{text}'; write it as YAML (e.g. 0.001)") from None


def resolve_hyperparams(family: str | Family, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Shipped defaults updated by ``overrides``, with every key and schedule validated.

    ``overrides`` may be an RL Zoo block pasted as it is (``rltransfer.hyperparams.from_zoo``).
    """
    hp = default_hyperparams(family)
    hp.update(from_zoo(overrides or {}))
    for key, value in hp.items():
        if key in RESERVED:
            raise UserError(f"hyperparameter '{key}' is set by rltransfer itself; remove it")
        if key not in PPO_KEYS and key not in RUN_KEYS:
            raise UserError(
                f"unknown hyperparameter '{key}'{did_you_mean(key, PPO_KEYS | RUN_KEYS)}; "
                f"use a PPO argument or one of {sorted(RUN_KEYS)}"
            )
        if isinstance(value, str) and key not in ("activation_fn", "normalize", *POLICY_KEYS):
            schedule(value, key)  # validate now, not at the first update
    if "log_std_init" in hp and (
        isinstance(hp["log_std_init"], bool) or not isinstance(hp["log_std_init"], int | float)
    ):
        raise UserError(f"log_std_init must be a number, got {hp['log_std_init']!r}")
    if "ortho_init" in hp and not isinstance(hp["ortho_init"], bool):
        raise UserError(f"ortho_init must be true or false, got {hp['ortho_init']!r}")
    for key in ("n_timesteps", "n_envs", "eval_freq", "eval_episodes", *POSITIVE_INTS):
        count = whole_number(hp[key]) if key in hp else None
        if count is not None:
            hp[key] = count  # 1e5 and 1e5.0 as the int PPO takes
    for key in ("n_timesteps", "n_envs", "eval_freq", "eval_episodes"):
        if isinstance(hp[key], bool) or not isinstance(hp[key], int) or hp[key] <= 0:
            raise UserError(f"{key} must be a positive integer, got {hp[key]!r}")
    check_values(hp)
    hp["normalize"] = canonical(hp.get("normalize", False))  # explicit in configs and manifests, off too
    if str(hp["activation_fn"]).lower() not in ACTIVATIONS:
        raise UserError(f"activation_fn '{hp['activation_fn']}' unknown; choose one of {sorted(ACTIVATIONS)}")
    return hp


def schedule(value: Any, key: str = "value") -> float | Callable[[float], float]:
    """``lin_0.001`` -> linear decay to 0 over training (RL Zoo convention); numbers pass through."""
    if isinstance(value, str):
        if value.startswith("lin_"):
            try:
                initial = float(value[4:])
            except ValueError:
                raise UserError(f"{key}='{value}' is not a schedule; write lin_<number>, e.g. lin_0.001") from None
            return _Linear(initial)
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{key}='{value}' must be a number or lin_<number>") from None
    return value


class _Linear:
    """Picklable linear schedule (SB3 calls it with progress_remaining going 1 -> 0)."""

    def __init__(self, initial: float) -> None:
        self.initial = initial

    def __call__(self, progress_remaining: float) -> float:
        # SB3 lets progress go below 0 when the last rollout overshoots the budget.
        return max(progress_remaining, 0.0) * self.initial

    def __repr__(self) -> str:
        return f"lin_{self.initial}"


def ppo_kwargs(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``hp`` that PPO's constructor takes, schedules turned into callables."""
    return {k: schedule(v, k) if isinstance(v, str) else v for k, v in hp.items() if k in PPO_KEYS}


def activation(hp: Mapping[str, Any]) -> type[nn.Module]:
    return ACTIVATIONS[str(hp["activation_fn"]).lower()]
