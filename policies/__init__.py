"""Policies whose shared feature layers form a named, transferable trunk."""

from rltransfer.policies.crossspace import AdapterTrunkExtractor, MaskedDiagGaussianDistribution
from rltransfer.policies.multitask import (
    MultiTaskActorCriticPolicy,
    MultiTaskTrunkExtractor,
    TaskHeads,
    TaskLinear,
)
from rltransfer.policies.trunk import TRUNK_PREFIX, TrunkExtractor, build_trunk

__all__ = [
    "TRUNK_PREFIX",
    "AdapterTrunkExtractor",
    "MaskedDiagGaussianDistribution",
    "MultiTaskActorCriticPolicy",
    "MultiTaskTrunkExtractor",
    "TaskHeads",
    "TaskLinear",
    "TrunkExtractor",
    "build_trunk",
]
