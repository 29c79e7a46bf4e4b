"""scikit-learn estimators: :class:`ConvexBNClassifier` and :class:`ConvexBNRegressor`.

The estimators compose the rest of the package and add nothing to the math:
:func:`~convexbn.bn_basis` -> :func:`~convexbn.make_arrangements` -> one :class:`~convexbn.ConvexBNProblem`
per output (spec section 8; run in parallel with ``n_jobs``) -> a solver backend ->
:func:`~convexbn.recover_network` -> :func:`~convexbn.network.concatenate_networks`.

Scaling of ``beta``: the estimators minimize the *mean* loss plus the weight decay,

    (1/n) sum_i loss(f(x_i), y_i) + (beta / 2) sum_j (gamma_j^2 + alpha_j^2 + ||v_j||^2),

which is the spec's objective (3) (a sum over samples) divided by ``n`` with weight decay ``beta * n``.
So a ``beta`` picked by cross-validation transfers across folds and dataset sizes, as with
scikit-learn's own ``alpha`` parameters; ``network_.beta`` holds the spec-scaled ``beta * n``.
"""

from __future__ import annotations

import hashlib
import warnings
from numbers import Integral

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import check_choice, check_positive, check_positive_int, prepare_data
from .arrangements import make_arrangements
from .basis import bn_basis
from .implicit_reg import filtered_basis, implicit_objective, spectral_filter
from .network import BNNetwork, concatenate_networks
from .problem import ConvexBNProblem, SolverError, SolverWarning
from .recovery import recover_network
from .solvers import closed_form_applies
from .solvers.cvxpy_backend import resolve_cvxpy_solver

__all__ = ["ConvexBNClassifier", "ConvexBNRegressor", "AUTO_CVXPY_MAX_ROWS", "class_targets"]

#: ``solver="auto"`` uses cvxpy + Clarabel while the program has at most this many cone-constraint rows
#: ``2 n P`` per output, and the torch solver above. At 100,000 rows (n=500, P=100) Clarabel took
#: 22 s and the torch ADMM solver 52 s on 2 cores (``benchmarks/bench_torch_vs_cvxpy.py``); Clarabel's
#: time and memory grow about cubically, the torch solver's linearly per iteration.
AUTO_CVXPY_MAX_ROWS = 400_000
#: Largest relative gap between objective (3) of the recovered network (a plain forward pass) and the
#: convex objective (4) accepted without a ConvergenceWarning.
EQUIVALENCE_RTOL = 1e-6

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


def _choose_solver(problem: ConvexBNProblem, requested: str) -> str:
    """Resolve ``"auto"`` (closed form, cvxpy or torch) and MOSEK's fallback, in the calling process."""
    if requested == "auto":
        if closed_form_applies(problem)[0]:
            return "closed_form"
        return "clarabel" if 2 * problem.n_samples * problem.n_patterns <= AUTO_CVXPY_MAX_ROWS else "torch"
    if requested == "mosek":
        # warns (SolverWarning) and returns "CLARABEL" when MOSEK is missing or unlicensed
        return resolve_cvxpy_solver("MOSEK").lower()
    if requested == "cvxpy":
        return "clarabel"
    return requested


def _solver_options(solver: str, *, max_iter, tol, device, dtype, verbose, warm) -> dict:
    """Map the estimator's generic options onto the backend's own names."""
    if solver == "closed_form":
        return {}
    if solver == "torch":
        opts = {"device": device, "dtype": dtype, "verbose": bool(verbose)}
        if max_iter is not None:
            opts["max_iter"] = max_iter
        if tol is not None:
            opts["tol"] = tol
        if warm is not None:
            opts["warm_start"] = warm
        return opts
    opts = {"verbose": bool(verbose)}
    if solver == "clarabel":
        if max_iter is not None:
            opts["max_iter"] = max_iter
        if tol is not None:
            opts.update(tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
    elif solver == "scs":
        if max_iter is not None:
            opts["max_iters"] = max_iter
        if tol is not None:
            opts.update(eps_abs=tol, eps_rel=tol)
    elif solver == "mosek" and tol is not None:
        opts["mosek_params"] = {"MSK_DPAR_INTPNT_CO_TOL_REL_GAP": tol}
    return opts


def _solve_one(problem: ConvexBNProblem, solver: str, options: dict, fallback: dict | None):
    """Solve one program and recover its network (runs in a joblib worker).

    With ``fallback`` (torch options; ``solver="auto"`` only), a conic solver's failure is answered by
    solving with the torch solver instead; the failure is reported back to the caller.
    """
    failure = None
    with warnings.catch_warnings():
        # the status is reported to the caller, which warns with ConvergenceWarning in its own process
        warnings.simplefilter("ignore", SolverWarning)
        try:
            solution = problem.solve(solver, **options)
        except SolverError as exc:
            if fallback is None:
                raise
            failure = str(exc)
            solution = problem.solve("torch", **fallback)
    return {
        "failure": failure,
        "network": recover_network(solution),
        "objective": solution.objective,
        "status": solution.status,
        "n_iter": solution.n_iter,
        "solver": solution.solver,
        "violation": solution.constraint_violation,
        "groups": {
            "W_pos": solution.W_pos,
            "W_neg": solution.W_neg,
            "info": {"admm_state": solution.info.get("admm_state")},
        },
    }


class _ConvexBNBase(BaseEstimator):
    """Shared fit logic. Subclasses define ``_targets`` (one target array per program) and tags."""

    _losses: tuple[str, ...] = ()

    def __init__(
        self,
        beta=1e-3,
        loss="squared",
        n_arrangements=100,
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
        self.n_arrangements = n_arrangements
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
        check_positive(self.beta, "beta")
        check_choice(self.loss, "loss", self._losses)
        check_positive_int(self.n_arrangements, "n_arrangements")
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
        """Build and solve one program per entry of ``targets``; set the fitted attributes."""
        n = X.shape[0]
        full_basis = bn_basis(X)
        implicit = spectral_filter(self.implicit_reg)
        basis, _ = filtered_basis(full_basis, implicit)  # the leading directions, for a truncating filter
        arrangements = make_arrangements(
            basis, self.n_arrangements, random_state=check_random_state(self.random_state)
        )
        beta = float(self.beta) * n
        problems = [
            ConvexBNProblem(basis, arrangements, y, beta=beta, loss=loss, implicit_reg=implicit)
            for y in targets
        ]
        solver = _choose_solver(problems[0], self.solver)

        warm = [None] * len(problems)
        key = hashlib.sha1(np.packbits(arrangements.mask).tobytes()).hexdigest()
        previous = getattr(self, "_warm_groups", None)
        if self.warm_start and solver == "torch" and previous is not None:
            if previous["key"] == key and len(previous["groups"]) == len(problems):
                warm = previous["groups"]

        def options(name, w=None):
            return _solver_options(
                name,
                max_iter=self.max_iter,
                tol=self.tol,
                device=self.device,
                dtype=dtype,
                verbose=self.verbose,
                warm=w,
            )

        fallback = options("torch") if self.solver == "auto" and solver != "torch" else None
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_solve_one)(problem, solver, options(solver, w), fallback)
            for problem, w in zip(problems, warm, strict=True)
        )
        for j, res in enumerate(results):
            if res["failure"] is not None:
                warnings.warn(
                    f"{type(self).__name__}: {res['failure']} (program {j}); solver='auto' solved it with "
                    "the torch solver instead",
                    SolverWarning,
                    stacklevel=3,
                )
            if res["status"] != "optimal":
                warnings.warn(
                    f"{type(self).__name__}: solver {res['solver']} stopped before reaching the requested "
                    f"accuracy on program {j} (status {res['status']!r}); increase max_iter or loosen tol",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        # the equivalence (3) == (4), checked by a plain forward pass of each recovered network (with a
        # spectral filter, (3) with the filter's weighted penalty, which the convex objective equals)
        gaps = []
        for j, (res, y) in enumerate(zip(results, targets, strict=True)):
            if implicit.is_identity:
                forward = res["network"].objective(X, y)
            else:
                forward = implicit_objective(res["network"], X, y, full_basis, implicit)
            gap = abs(forward - res["objective"]) / max(abs(res["objective"]), 1e-12)
            gaps.append(gap)
            if gap > EQUIVALENCE_RTOL:
                warnings.warn(
                    f"{type(self).__name__}: program {j}: the recovered network's objective (3) "
                    f"{forward:.10g} differs from the convex objective (4) {res['objective']:.10g} by "
                    f"{gap:.1e} relative (solver status {res['status']!r}, cone-constraint violation "
                    f"{res['violation']:.1e}); the network is exact only at a feasible solution",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        self.equivalence_gap_ = float(max(gaps))
        self.network_: BNNetwork = concatenate_networks(res["network"] for res in results)
        self.n_neurons_ = int(self.network_.n_neurons)
        self.objective_ = float(sum(res["objective"] for res in results)) / n
        used = ["torch" if res["failure"] is not None else solver for res in results]
        self.solver_ = ",".join(dict.fromkeys(used))
        iters = [res["n_iter"] if res["n_iter"] is not None else 1 for res in results]
        self.n_iter_ = int(max(max(iters), 1))
        self.n_arrangements_ = int(arrangements.n_patterns)
        self.constraint_violation_ = float(max(res["violation"] for res in results))
        self._warm_groups = (
            {"key": key, "groups": [res["groups"] for res in results]} if self.warm_start else None
        )
        return self

    def _forward(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, prepare_data(X), reset=False, dtype=np.float64)
        return self.network_.forward(X, training=False)

    # --- persistence -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Save the fitted estimator to ``path`` (an ``.npz`` file; see :mod:`convexbn.persistence`)."""
        from .persistence import save_estimator

        save_estimator(self, path)

    @classmethod
    def load(cls, path, *, check_version: bool = True):
        """Load an estimator saved with :meth:`save`; refuses another class, version or a corrupt file."""
        from .persistence import load_estimator

        return load_estimator(path, expected_class=cls, check_version=check_version)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified with a warning (prepare_data)
        return tags


class ConvexBNClassifier(ClassifierMixin, _ConvexBNBase):
    """Two-layer ReLU network with batch normalization, trained to the global optimum of its convex
    reformulation (Ergen et al., ICLR 2022) over sampled activation patterns.

    Parameters
    ----------
    beta : float, default=1e-3
        Weight decay per sample (see the module docstring): the program solved has ``beta * n_samples``.
    loss : {"logistic", "squared", "hinge", "cross_entropy"}, default="logistic"
        ``"logistic"``: binary logistic; one-vs-rest programs for several classes. ``"squared"``: squared
        loss on +-1 targets (binary) or one-hot targets (several classes), as in the paper.
        ``"hinge"``: one-vs-rest hinge. ``"cross_entropy"``: multinomial softmax, one joint program
        whose outputs are coupled through the loss (not parallelized). ``predict_proba`` exists for
        ``"logistic"`` and ``"cross_entropy"``.
    n_arrangements : int, default=100
        Number of sampled activation patterns (hyperplane arrangements) per program. When the exact
        number of patterns of the data is at most this, all of them are enumerated and the fit is the
        global optimum of the network of any width.
    solver : {"auto", "cvxpy", "clarabel", "mosek", "scs", "closed_form", "torch"}, default="auto"
        ``"auto"``: the closed form when it applies (squared loss, ``rank + 1 == n``), cvxpy + Clarabel
        while ``2 n P <= AUTO_CVXPY_MAX_ROWS``, else the torch solver; a program on which Clarabel fails
        is solved by the torch solver instead (with a ``SolverWarning``). ``"mosek"`` falls back to
        Clarabel with a warning when MOSEK is not licensed. The choice is recorded in ``solver_``.
    device : str, default="cpu"
        Torch solver only: ``"cpu"`` or ``"cuda"``.
    dtype : {"float64", "float32"}, default="float64"
        Torch solver only. float32 on the exact program finishes in float64 once its duality gap
        stalls (see :func:`convexbn.solvers.torch_backend.solve_torch`, ``finish_dtype``).
    max_iter : int or None, default=None
        Iteration limit passed to the backend (Clarabel ``max_iter``, SCS ``max_iters``, torch
        ``max_iter``); ``None`` keeps the backend's default.
    tol : float or None, default=None
        Tolerance passed to the backend (Clarabel gap and feasibility tolerances, SCS ``eps_abs`` and
        ``eps_rel``, MOSEK's relative gap, torch ``tol``); ``None`` keeps the backend's default.
    warm_start : bool, default=False
        Torch solver only: start from the previous fit's solution when the data and patterns are the
        same (e.g. a path over ``beta``; set ``beta`` with ``set_params`` and refit). Ignored by the
        conic solvers, which cannot be warm-started.
    random_state : int, RandomState or None, default=None
        Seed of the pattern sampling.
    n_jobs : int or None, default=None
        Number of one-vs-rest programs solved in parallel (``sklearn.utils.parallel``; any joblib
        backend, e.g. Dask or Ray).
    verbose : int, default=0
        Solver output.
    implicit_reg : None, str or float, default=None
        Spectral filter encoding gradient descent's implicit regularization (spec section 9,
        :mod:`convexbn.implicit_reg`): ``"power:t"`` (or the float ``t``) builds the program on
        ``[U (S/S_max)^t, 1/sqrt(n)]``, ``"top:k"`` / ``"tau:x"`` on the leading singular directions
        only. ``None``: the plain program. The network is still a BN network; ``equivalence_gap_`` then
        compares with the filter's weighted objective (:func:`convexbn.implicit_reg.implicit_objective`).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    network_ : BNNetwork
        The recovered network; ``network_.to_torch()`` exports it as a PyTorch module.
    n_neurons_ : int
        Number of hidden neurons of ``network_`` (nonzero groups of the convex solution).
    objective_ : float
        The objective at the solution, in the estimator's scaling (mean loss + weight decay).
    solver_ : str
        The backend used (``"closed_form"``, ``"clarabel"``, ``"mosek"``, ``"scs"`` or ``"torch"``);
        ``"clarabel,torch"`` when ``solver="auto"`` had to fall back on some of the programs.
    n_iter_ : int
        Largest iteration count over the programs (1 for the closed form).
    n_arrangements_ : int
        Distinct patterns used.
    constraint_violation_ : float
        Largest relative cone-constraint violation (0 up to solver accuracy).
    equivalence_gap_ : float
        Largest relative gap between the recovered network's objective (3), by a forward pass on the
        training data, and the convex objective (4); above ``EQUIVALENCE_RTOL`` (1e-6) a
        ``ConvergenceWarning`` says which program and why (status, constraint violation).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` has string feature names.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from convexbn import ConvexBNClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), ConvexBNClassifier(n_arrangements=20, random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    """

    _losses = ("logistic", "squared", "hinge", "cross_entropy")

    # the signature repeats the base class's because scikit-learn reads parameters (and their defaults,
    # here loss="logistic") from each estimator's own __init__
    def __init__(
        self,
        beta=1e-3,
        loss="logistic",
        n_arrangements=100,
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
        super().__init__(
            beta=beta, loss=loss, n_arrangements=n_arrangements, solver=solver, device=device,
            dtype=dtype, max_iter=max_iter, tol=tol, warm_start=warm_start,
            random_state=random_state, n_jobs=n_jobs, verbose=verbose, implicit_reg=implicit_reg,
        )  # fmt: skip

    def fit(self, X, y):
        """Fit the network to the global optimum of the convex program on the sampled patterns.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels (any hashable type scikit-learn accepts, e.g. strings).

        Returns
        -------
        self
        """
        dtype = self._check_params()
        X, y = validate_data(self, prepare_data(X), y, dtype=np.float64, ensure_min_samples=2)
        if y.dtype == object and len({type(v) for v in y.ravel()}) > 1:
            raise TypeError(
                f"y mixes label types {sorted({type(v).__name__ for v in y.ravel()})}; "
                "class labels must be all numbers or all strings"
            )
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise ValueError(
                f"y: {type(self).__name__} needs discrete class labels ({exc}); for a real-valued "
                "target use ConvexBNRegressor"
            ) from None
        classes, y_index = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data; "
                f"got 1 class ({classes[0]!r})"
            )
        self.classes_ = classes
        C = classes.size
        T = class_targets(y_index, C, self.loss)
        targets = [T] if self.loss == "cross_entropy" else list(T.T)
        return self._fit_programs(X, targets, self.loss, dtype)

    def decision_function(self, X) -> np.ndarray:
        """Network outputs (eval-mode BN with the training statistics).

        Returns
        -------
        ndarray of shape (n_samples,) for two classes (positive means ``classes_[1]``), else
        (n_samples, n_classes).
        """
        F = self._forward(X)
        if self.classes_.size == 2:
            return F[:, 1] - F[:, 0] if F.shape[1] == 2 else F[:, 0]
        return F

    def predict(self, X) -> np.ndarray:
        """Predicted class labels, shape (n_samples,)."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes_[index]

    def _has_proba(self):
        return self.loss in ("logistic", "cross_entropy")

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes): the sigmoid (binary logistic), the
        normalized one-vs-rest sigmoids (several classes, logistic) or the softmax (cross-entropy)."""
        F = self._forward(X)
        if self.loss == "cross_entropy":
            return softmax(F, axis=1)
        if F.shape[1] == 1:
            p = expit(F[:, 0])
            return np.column_stack([1.0 - p, p])
        p = expit(F)
        return p / p.sum(axis=1, keepdims=True)

    @available_if(_has_proba)
    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class ConvexBNRegressor(RegressorMixin, _ConvexBNBase):
    """Two-layer ReLU+BN network regressor trained to the global optimum of its convex reformulation.

    Squared loss; several target columns give one program per output (spec section 8), solved in
    parallel with ``n_jobs``. Parameters and attributes are those of :class:`ConvexBNClassifier`
    (``loss`` accepts only ``"squared"``; there is no ``classes_`` or ``predict_proba``).

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import StandardScaler
    >>> from convexbn import ConvexBNRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> reg = ConvexBNRegressor(beta=1e-2, n_arrangements=20, random_state=0).fit(X, y / y.std())
    >>> reg.score(X, y / y.std()) > 0.5
    True
    """

    _losses = ("squared",)

    def fit(self, X, y):
        """Fit the network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self
        """
        dtype = self._check_params()
        X, y = validate_data(
            self,
            prepare_data(X),
            y,
            dtype=np.float64,
            multi_output=True,
            y_numeric=True,
            ensure_min_samples=2,
        )
        self._y_ndim = y.ndim
        Y = y.reshape(len(y), -1)
        return self._fit_programs(X, [Y[:, c] for c in range(Y.shape[1])], "squared", dtype)

    def predict(self, X) -> np.ndarray:
        """Predictions, shape (n_samples,) or (n_samples, n_outputs) like the ``y`` seen in fit."""
        F = self._forward(X)
        return F[:, 0] if self._y_ndim == 1 else F

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
