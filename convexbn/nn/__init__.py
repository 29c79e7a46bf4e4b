"""The nonconvex networks in PyTorch, their trainers, and the other accounts of BN as baselines.

- :class:`TwoLayerNet` -- ``Linear -> norm -> ReLU -> Linear`` in the parametrization of docs/math.md section
1 (eq. (1)-(3))
  or PyTorch's ``BatchNorm1d`` one, with conversions both ways;
- normalization layers (:mod:`convexbn.nn.layers`): batch normalization, Full Normalization (Lian & Liu
  2019), population normalization (Luo et al. 2019);
- :class:`GammaDecay` -- Luo et al.'s explicit regularizer; :class:`BNPreconditioner` -- BN preconditioning
  (Lange, Helfrich & Ye 2022);
- :func:`train_network` -- SGD/Adam, full or mini-batch, logging the full-data objective (3);
- :func:`probe_landscape` -- Santurkar et al.'s (2018) loss-landscape measures.
"""

from .bnp import BNPreconditioner
from .gamma_decay import GammaDecay
from .landscape import LandscapeProbe, convex_program_loss, probe_landscape
from .layers import (
    FullNormalization,
    NormLayer,
    PopulationNormalization,
    SpecBatchNorm,
    exact_statistics,
    frozen_statistics,
    power_schedule,
)
from .model import NORMS, TwoLayerNet
from .trainer import BATCH_ORDERS, OPTIMIZERS, TrainingRun, make_batches, train_network

__all__ = [
    "BATCH_ORDERS",
    "BNPreconditioner",
    "FullNormalization",
    "GammaDecay",
    "LandscapeProbe",
    "NORMS",
    "NormLayer",
    "OPTIMIZERS",
    "PopulationNormalization",
    "SpecBatchNorm",
    "TrainingRun",
    "TwoLayerNet",
    "convex_program_loss",
    "exact_statistics",
    "frozen_statistics",
    "make_batches",
    "power_schedule",
    "probe_landscape",
    "train_network",
]
