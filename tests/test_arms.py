"""A spec's arms: names, strategies and options, and ``sweep`` expanding one arm into several."""

from __future__ import annotations

from typing import Any

import pytest
from specs import grid_spec

from rltransfer.errors import UserError
from rltransfer.experiment.spec import parse_spec


def test_an_arm_sweeps_option_values_as_one_arm_each() -> None:
    spec = parse_spec(
        grid_spec(
            "sweep",
            arms=[
                "scratch",
                {"name": "l2sp", "strategy": "l2sp", "sweep": {"coef": [0.001, 0.1]}},
                {
                    "strategy": "finetune",
                    "transfer": "heads",
                    "sweep": {"trunk_lr_scale": [0.1, [0.1, 1.0]], "rehearse": [False, True]},
                },
            ],
        )
    )
    assert [a.name for a in spec.arms] == [
        "scratch",
        "l2sp-coef=0.001",
        "l2sp-coef=0.1",
        "finetune-trunk_lr_scale=0.1-rehearse=false",
        "finetune-trunk_lr_scale=0.1-rehearse=true",
        "finetune-trunk_lr_scale=0.1,1-rehearse=false",
        "finetune-trunk_lr_scale=0.1,1-rehearse=true",
    ]
    assert [a.strategy.l2sp for a in spec.arms[1:3]] == [0.001, 0.1]
    last = spec.arms[-1].strategy
    assert last.trunk_lr_scale == (0.1, 1.0) and last.rehearse and "pi_head" in last.transfer
    assert spec.arms[-1].dirname == "finetune-trunk_lr_scale-0.1-1-rehearse-true"


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"lr": [1]}, "'lr' is not a strategy option; sweep one of: coef, layer_map"),
        ({"coef": 0.1}, r"sweep\.coef must be a non-empty list of values, got 0\.1"),
        ({"coef": []}, "must be a non-empty list"),
        ({}, "sweep must map options to lists of values"),
        ({"coef": [0.1, -1.0]}, r"spec: l2sp-coef=-1: l2sp coef must be > 0, got -1\.0"),
    ],
)
def test_bad_sweeps_are_one_line(sweep: dict[str, Any], message: str) -> None:
    arms = ["scratch", {"name": "l2sp", "strategy": "l2sp", "sweep": sweep}]
    with pytest.raises(UserError, match=message):
        parse_spec(grid_spec("sweep", arms=arms))
    with pytest.raises(UserError, match="'coef' is both set and swept; drop one"):
        parse_spec(grid_spec("sweep", arms=["scratch", {"strategy": "l2sp", "coef": 1, "sweep": {"coef": [2]}}]))
