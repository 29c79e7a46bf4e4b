"""convexbn: globally optimal two-layer ReLU networks with batch normalization.

The pieces, each in its own module (spec: ``shared/spec/convex-bn.md``):

- :mod:`convexbn.basis` -- centering, SVD and the BN basis ``U'``;
- :mod:`convexbn.arrangements` -- sampled or enumerated activation patterns;
- :mod:`convexbn.losses` -- convex losses;
- :mod:`convexbn.problem` -- the convex program (4) and its solution;
- :mod:`convexbn.solvers` -- backends (cvxpy + Clarabel/MOSEK/SCS, closed form, torch);
- :mod:`convexbn.recovery` / :mod:`convexbn.network` -- the recovered nonconvex network;
- :mod:`convexbn.certificate` / :mod:`convexbn.network_certificate` -- the dual certificate of global
  optimality, of a program's solution / of a trained network;
- :mod:`convexbn.pattern_search` -- growing the pattern set from the dual (column generation);
- :mod:`convexbn.implicit_reg` -- spectral filters encoding gradient descent's implicit bias (spec 9);
- :mod:`convexbn.deep` / :mod:`convexbn.post_relu` -- layerwise deep BN networks and BN after the ReLU
  (spec 10);
- :mod:`convexbn.fit` -- the fit core: data -> patterns (searched) -> programs -> network -> bounds;
- :mod:`convexbn.estimators` -- scikit-learn estimators over the fit core;
- :mod:`convexbn.persistence` -- portable save/load of fitted estimators.
"""

from ._version import __version__ as __version__
from .arrangements import (
    Arrangements,
    enumerate_arrangements,
    make_arrangements,
    max_arrangements,
    merge_arrangements,
    network_arrangements,
    relu_arrangements,
    sample_arrangements,
)
from .basis import BNBasis, bn_basis
from .certificate import Certificate, certify
from .deep import DeepBNNetwork, fit_layerwise
from .estimators import ConvexBNClassifier, ConvexBNRegressor
from .fit import ConvexFit, SearchOptions, fit_convex_bn
from .implicit_reg import SpectralFilter, filtered_basis, implicit_objective, spectral_filter
from .losses import get_loss
from .network import BNNetwork, concatenate_networks
from .network_certificate import certify_network
from .path import regularization_path
from .pattern_search import candidate_patterns, solve_with_pattern_search
from .persistence import ModelFileError
from .post_relu import PostReLUBNNetwork, PostReLUBNProblem, recover_post_relu_network
from .problem import ConvexBNProblem, ConvexBNSolution, SolverError, SolverWarning
from .recovery import recover_network
from .solvers import available_solvers

__all__ = [
    "Arrangements",
    "BNBasis",
    "BNNetwork",
    "Certificate",
    "DeepBNNetwork",
    "PostReLUBNNetwork",
    "PostReLUBNProblem",
    "SpectralFilter",
    "ModelFileError",
    "ConvexBNClassifier",
    "ConvexBNProblem",
    "ConvexBNRegressor",
    "ConvexBNSolution",
    "ConvexFit",
    "SearchOptions",
    "SolverError",
    "SolverWarning",
    "available_solvers",
    "candidate_patterns",
    "bn_basis",
    "certify",
    "certify_network",
    "concatenate_networks",
    "enumerate_arrangements",
    "filtered_basis",
    "fit_convex_bn",
    "fit_layerwise",
    "implicit_objective",
    "get_loss",
    "make_arrangements",
    "max_arrangements",
    "merge_arrangements",
    "network_arrangements",
    "recover_network",
    "recover_post_relu_network",
    "relu_arrangements",
    "spectral_filter",
    "solve_with_pattern_search",
    "regularization_path",
    "sample_arrangements",
]
