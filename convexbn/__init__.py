"""convexbn: globally optimal two-layer ReLU networks with batch normalization.

The pieces, each in its own module (the math: ``docs/math.md``):

- :mod:`convexbn.basis` -- centering, SVD and the BN basis ``U'``;
- :mod:`convexbn.arrangements` -- sampled or enumerated activation patterns;
- :mod:`convexbn.losses` -- convex losses;
- :mod:`convexbn.problem` -- the convex program (4) and its solution;
- :mod:`convexbn.solvers` -- backends (cvxpy + Clarabel/MOSEK/SCS, closed form, torch);
- :mod:`convexbn.recovery` / :mod:`convexbn.network` -- the recovered nonconvex network;
- :mod:`convexbn.certificate` / :mod:`convexbn.network_certificate` -- the dual certificate of global
  optimality, of a program's solution / of a trained network;
- :mod:`convexbn.pattern_search` -- growing the pattern set from the dual (column generation);
- :mod:`convexbn.implicit_reg` -- spectral filters encoding gradient descent's implicit bias (docs/math.md
section 9);
- :mod:`convexbn.deep` / :mod:`convexbn.post_relu` -- layerwise deep BN networks and BN after the ReLU
  (docs/math.md section 10);
- :mod:`convexbn.fit` -- the fit core: data -> patterns (searched) -> programs -> network -> bounds;
- :mod:`convexbn.estimators` -- scikit-learn estimators over the fit core;
- :mod:`convexbn.persistence` -- portable save/load of fitted estimators.
"""

from ._version import __version__ as __version__

#: Where each public name lives: ``import convexbn`` imports none of them (numpy, scikit-learn, torch and
#: cvxpy load when a name that needs them is first used, PEP 562), ``from convexbn import X`` imports X's
#: module only.
_LOCATIONS = {
    "Arrangements": "arrangements",
    "BNBasis": "basis",
    "BNNetwork": "network",
    "Certificate": "certificate",
    "ConvexBNClassifier": "estimators",
    "ConvexBNProblem": "problem",
    "ConvexBNRegressor": "estimators",
    "ConvexBNSolution": "problem",
    "ConvexFit": "fit",
    "DeepBNNetwork": "deep",
    "ModelFileError": "persistence",
    "PostReLUBNNetwork": "post_relu",
    "PostReLUBNProblem": "post_relu",
    "SearchOptions": "fit",
    "SolverError": "problem",
    "SolverWarning": "problem",
    "SpectralFilter": "implicit_reg",
    "available_solvers": "solvers",
    "bn_basis": "basis",
    "candidate_patterns": "pattern_search",
    "certify": "certificate",
    "certify_network": "network_certificate",
    "concatenate_networks": "network",
    "enumerate_arrangements": "arrangements",
    "filtered_basis": "implicit_reg",
    "fit_convex_bn": "fit",
    "fit_layerwise": "deep",
    "get_loss": "losses",
    "implicit_objective": "implicit_reg",
    "make_arrangements": "arrangements",
    "max_arrangements": "arrangements",
    "merge_arrangements": "arrangements",
    "network_arrangements": "arrangements",
    "recover_network": "recovery",
    "recover_post_relu_network": "post_relu",
    "regularization_path": "path",
    "relu_arrangements": "arrangements",
    "sample_arrangements": "arrangements",
    "solve_with_pattern_search": "pattern_search",
    "spectral_filter": "implicit_reg",
}


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


def __getattr__(name: str):
    import importlib
    import importlib.util

    module = _LOCATIONS.get(name)
    if module is None:
        # a submodule (``convexbn.nn``, ``convexbn.solvers``, ...), as an eager package would have it
        if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'convexbn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
