"""rltransfer: RL policy transfer with honest comparisons against scratch.

Public API: :func:`pretrain`, :func:`finetune`, :func:`run_experiment`, :func:`load_agent` (a
finished run's policy, to act with), :func:`generalize` (an experiment's runs on held-out
variants), :func:`load_checkpoint`, :func:`parse_strategy`, :func:`load_spec`, :func:`build_report`,
:func:`zoo_hyperparams` (a family's block of an RL Zoo hyperparameter file).
"""

from rltransfer.agent import Agent, load_agent
from rltransfer.checkpoint import Checkpoint, load_checkpoint
from rltransfer.errors import MinibatchWarning, NoLearningWarning, RltransferWarning, UserError
from rltransfer.experiment.generalization import Generalization, generalize
from rltransfer.experiment.report import build_report
from rltransfer.experiment.run import run_experiment
from rltransfer.experiment.spec import ExperimentSpec, load_spec
from rltransfer.finetuning import FinetuneResult, finetune
from rltransfer.pretraining import PretrainResult, pretrain
from rltransfer.strategies import Strategy, parse_strategy
from rltransfer.transfer import LayerMap, TransferReport, apply_transfer
from rltransfer.zoo_file import zoo_hyperparams

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Checkpoint",
    "ExperimentSpec",
    "FinetuneResult",
    "Generalization",
    "LayerMap",
    "MinibatchWarning",
    "NoLearningWarning",
    "PretrainResult",
    "RltransferWarning",
    "Strategy",
    "TransferReport",
    "UserError",
    "apply_transfer",
    "build_report",
    "finetune",
    "generalize",
    "load_agent",
    "load_checkpoint",
    "load_spec",
    "parse_strategy",
    "pretrain",
    "run_experiment",
    "zoo_hyperparams",
]
