"""What the estimators share (:mod:`convexbn.estimators`): the fit, predictions and persistence of
:class:`_ConvexBNBase`, the class-target encoding and the solver and dtype choices.
"""

from __future__ import annotations

import hashlib
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import check_choice, check_positive, check_positive_int, prepare_data
from .fit import (
    ARRANGEMENT_METHODS,
    NEURON_MODES,
    SearchOptions,
    choose_solver,
    fit_convex_bn,
    warm_state,
)
from .implicit_reg import spectral_filter
from .network import BNNetwork
from .persistence import load_estimator, save_estimator

__all__ = ["class_targets", "SOLVER_CHOICES", "DTYPES"]

SOLVER_CHOICES = ("auto", "cvxpy", "clarabel", "mosek", "scs", "closed_form", "torch")


DTYPES = ("float64", "float32")


def class_targets(y_index: np.ndarray, n_classes: int, loss: str) -> np.ndarray:
    """The (n, C') target matrix :class:`ConvexBNClassifier` fits for class indices ``y_index``.

    Two classes: one column of +-1 (cross-entropy: one-hot, two columns). Several classes: one-hot for
    ``"squared"`` and ``"cross_entropy"``, one-vs-rest +-1 columns for ``"logistic"`` and ``"hinge"``.
    Each column is one program, except for the cross-entropy, whose columns form one joint program.
    """
    if loss == "cross_entropy":
        return np.eye(n_classes)[y_index]
    if n_classes == 2:
        return np.where(y_index == 1, 1.0, -1.0)[:, None]
    if loss == "squared":
        return np.eye(n_classes)[y_index]
    return np.where(np.arange(n_classes)[None, :] == y_index[:, None], 1.0, -1.0)


def _dtype_name(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    return check_choice(name, "dtype", DTYPES)


def _choose_solver(problem, requested: str) -> str:
    """Kept for callers of convexbn 0.1: :func:`convexbn.fit.choose_solver` decides ``"auto"``."""
    return choose_solver(problem, requested)


class _ConvexBNBase(BaseEstimator):
    """Shared fit logic. Subclasses define the targets (one array per program) and tags; the pipeline is
    :func:`convexbn.fit.fit_convex_bn`."""

    _losses: tuple[str, ...] = ()

    def __init__(
        self,
        beta="auto",
        loss="squared",
        neurons="auto",
        arrangements="auto",
        n_arrangements="auto",
        search_rounds="auto",
        time_limit=None,
        solver="auto",
        device="cpu",
        dtype="float64",
        max_iter=None,
        tol=None,
        warm_start=False,
        random_state=None,
        n_jobs=None,
        verbose=0,
        implicit_reg=None,
    ):
        self.beta = beta
        self.loss = loss
        self.neurons = neurons
        self.arrangements = arrangements
        self.n_arrangements = n_arrangements
        self.search_rounds = search_rounds
        self.time_limit = time_limit
        self.solver = solver
        self.device = device
        self.dtype = dtype
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.implicit_reg = implicit_reg

    # --- parameter checks (fit never changes the parameters) -------------------------------------
    def _check_params(self):
        if not (isinstance(self.beta, str) and self.beta == "auto"):
            check_positive(self.beta, "beta")
        check_choice(self.loss, "loss", self._losses)
        check_choice(self.arrangements, "arrangements", ARRANGEMENT_METHODS)
        if not (isinstance(self.n_arrangements, str) and self.n_arrangements == "auto"):
            check_positive_int(self.n_arrangements, "n_arrangements")
        check_choice(self.neurons, "neurons", NEURON_MODES)
        if not (isinstance(self.search_rounds, str) and self.search_rounds == "auto"):
            if isinstance(self.search_rounds, bool) or not isinstance(self.search_rounds, Integral):
                raise TypeError(
                    f"search_rounds must be an int or 'auto', got {type(self.search_rounds).__name__}"
                )
            if self.search_rounds < 0:
                raise ValueError(f"search_rounds must be >= 0, got {self.search_rounds}")
        if self.time_limit is not None:
            check_positive(self.time_limit, "time_limit")
        check_choice(self.solver, "solver", SOLVER_CHOICES)
        check_choice(str(self.device).split(":")[0], "device", ("cpu", "cuda"))
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} was requested but torch finds no CUDA device")
        dtype = _dtype_name(self.dtype)
        if self.max_iter is not None:
            check_positive_int(self.max_iter, "max_iter")
        if self.tol is not None:
            check_positive(self.tol, "tol")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"warm_start must be a bool, got {type(self.warm_start).__name__}")
        if self.n_jobs is not None and not isinstance(self.n_jobs, Integral):
            raise TypeError(f"n_jobs must be an int or None, got {type(self.n_jobs).__name__}")
        if self.implicit_reg is not None and not isinstance(self.implicit_reg, (str, float, int)):
            raise TypeError(
                "implicit_reg must be None, a string ('power:0.5', 'top:10', 'tau:0.1') or a float (the "
                f"power); got {type(self.implicit_reg).__name__}"
            )
        spectral_filter(self.implicit_reg)  # raises on a malformed specification
        return dtype

    # --- fitting -----------------------------------------------------------------------------------
    def _fit_programs(self, X: np.ndarray, targets: list, loss: str, dtype: str):
        """Fit one program per entry of ``targets`` with :func:`convexbn.fit.fit_convex_bn`; set the
        fitted attributes."""
        n = X.shape[0]
        key = hashlib.sha1(np.ascontiguousarray(X).tobytes()).hexdigest()
        previous = getattr(self, "_warm_groups", None)
        warm = None
        if self.warm_start and previous is not None and previous["key"] == key:
            if len(previous["groups"]) == len(targets):
                warm = previous["groups"]
        options = {"max_iter": self.max_iter, "tol": self.tol, "verbose": bool(self.verbose),
                   "device": self.device, "dtype": dtype}  # fmt: skip
        fit = fit_convex_bn(
            X, targets, "auto" if isinstance(self.beta, str) else float(self.beta) * n, loss=loss,
            arrangements=self.arrangements, n_arrangements=self.n_arrangements,
            search=self._search_options(), solver=self.solver, solver_options=options,
            implicit_reg=self.implicit_reg, random_state=check_random_state(self.random_state),
            n_jobs=self.n_jobs, warm=warm, owner=type(self).__name__, neurons=self.neurons,
        )  # fmt: skip
        self.fit_ = fit
        self.neurons_ = fit.info.get("neurons", "per_output")
        self.beta_ = float(fit.beta) / n
        self.network_: BNNetwork = fit.network
        self.n_neurons_ = int(self.network_.n_neurons)
        self.objective_ = fit.objective / n
        self.lower_bound_ = fit.lower_bound / n
        self.gap_ = float(fit.gap)
        self.estimated_gap_ = float(fit.estimated_gap)
        self.certified_ = bool(fit.certified)
        self.dual_ratio_ = float(fit.dual_ratio)
        self.arrangements_method_ = fit.method
        self.history_ = [{**h, "objective": h["objective"] / n} for h in fit.history]
        self.solver_ = fit.solver
        iters = [p.solution.n_iter if p.solution.n_iter is not None else 1 for p in fit.programs]
        self.n_iter_ = int(max(max(iters), 1))
        self.n_arrangements_ = int(fit.n_arrangements)
        self.constraint_violation_ = float(max(p.solution.constraint_violation for p in fit.programs))
        self.equivalence_gap_ = float(max(p.bounds["equivalence_gap"] for p in fit.programs))
        self._warm_groups = (
            {"key": key, "groups": [warm_state(p.solution) for p in fit.programs]}
            if self.warm_start
            else None
        )
        return self

    def _search_options(self) -> SearchOptions:
        if isinstance(self.search_rounds, str):  # "auto": the defaults (10 pattern rounds, 30 atom rounds)
            return SearchOptions(time_limit=self.time_limit)
        rounds = int(self.search_rounds)
        return SearchOptions(rounds=rounds, shared_rounds=rounds, time_limit=self.time_limit)

    def _forward(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, prepare_data(X), reset=False, dtype=np.float64)
        return self.network_.forward(X, training=False)

    # --- persistence -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Save the fitted estimator to ``path`` (an ``.npz`` file; see :mod:`convexbn.persistence`)."""
        save_estimator(self, path)

    @classmethod
    def load(cls, path, *, check_version: bool = True):
        """Load an estimator saved with :meth:`save`; refuses another class, version or a corrupt file."""
        return load_estimator(path, expected_class=cls, check_version=check_version)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified with a warning (prepare_data)
        return tags
