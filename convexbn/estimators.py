"""scikit-learn estimators: :class:`ConvexBNClassifier` and :class:`ConvexBNRegressor`.

The estimators compose the rest of the package and add nothing to the math: they validate the data and
encode the targets, then call the fit core :func:`convexbn.fit.fit_convex_bn` (basis -> arrangements
searched by the dual oracle -> one :class:`~convexbn.ConvexBNProblem` per output, docs/math.md section 8,
run in parallel with ``n_jobs`` -> a solver backend -> :func:`~convexbn.recover_network` -> a bound on the
global optimum), and keep its result as fitted attributes.

Scaling of ``beta``: the estimators minimize the *mean* loss plus the weight decay,

    (1/n) sum_i loss(f(x_i), y_i) + (beta / 2) sum_j (gamma_j^2 + alpha_j^2 + ||v_j||^2),

which is objective (3) of docs/math.md (a sum over samples) divided by ``n`` with weight decay ``beta * n``.
So a ``beta`` picked by cross-validation transfers across folds and dataset sizes, as with
scikit-learn's own ``alpha`` parameters; ``network_.beta`` holds the docs/math.md-scaled ``beta * n``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ._validation import prepare_data
from .estimator_base import _ConvexBNBase, class_targets
from .fit import (
    AUTO_CVXPY_MAX_ROWS,
)
from .persistence import register_estimator

__all__ = ["ConvexBNClassifier", "ConvexBNRegressor", "AUTO_CVXPY_MAX_ROWS", "class_targets"]


@register_estimator
class ConvexBNClassifier(ClassifierMixin, _ConvexBNBase):
    """Two-layer ReLU network with batch normalization, trained to the global optimum of its convex
    reformulation (Ergen et al., ICLR 2022), with the activation patterns grown by the dual oracle.

    Parameters
    ----------
    beta : float or "auto", default="auto"
        Weight decay per sample (see the module docstring): the program solved has ``beta * n_samples``.
        ``"auto"``: :data:`convexbn.fit.AUTO_BETA_FRACTION` times the estimated critical beta above which
        the network is empty (:func:`convexbn.fit.estimate_critical_beta`), as glmnet and scikit-learn's
        lasso path scale theirs; the value used is ``beta_``.
    loss : {"logistic", "squared", "hinge", "cross_entropy"}, default="logistic"
        ``"logistic"``: binary logistic; one-vs-rest programs for several classes. ``"squared"``: squared
        loss on +-1 targets (binary) or one-hot targets (several classes), as in the paper.
        ``"hinge"``: one-vs-rest hinge. ``"cross_entropy"``: multinomial softmax, one joint program
        whose outputs are coupled through the loss (not parallelized). ``predict_proba`` exists for
        ``"logistic"`` and ``"cross_entropy"``.
    arrangements : {"auto", "search", "sample", "enumerate"}, default="auto"
        How the activation patterns are chosen (:mod:`convexbn.fit`). ``"search"``: a Gaussian sample of
        ``n_arrangements`` patterns grown by the dual oracle for up to ``search_rounds`` rounds, each
        re-solve warm-started (:func:`convexbn.solve_with_pattern_search`). ``"sample"``: the sample only
        (fast; a weaker restriction whose optimum can lie far above the global one). ``"enumerate"``:
        every pattern (tiny problems; a certified global optimum). ``"auto"``: enumerate when the Cover
        bound is at most :data:`convexbn.fit.AUTO_ENUMERATE_MAX`, else search (sample for the hinge loss).
    n_arrangements : int or "auto", default="auto"
        Size of the initial sample (``"auto"``: ``clip(4 (rank + 1), 50, 1000)``).
    search_rounds : int, default=10
        Pattern-adding rounds of the search at most (it stops earlier when no violating pattern is found).
    time_limit : float or None, default=None
        Seconds after which the search starts no new round.
    solver : {"auto", "cvxpy", "clarabel", "mosek", "scs", "closed_form", "torch"}, default="auto"
        ``"auto"`` (:func:`convexbn.fit.choose_solver`): the closed form when it applies (squared loss,
        ``rank + 1 == n``), the torch FISTA solver for smooth losses (``rank + 1 <= 128``), else Clarabel
        up to 20,000 cone rows and the torch solver above; a program on which Clarabel fails is solved by
        the torch solver instead (with a ``SolverWarning``). ``"mosek"`` falls back to Clarabel with a
        warning when MOSEK is not licensed. The choice is recorded in ``solver_``.
    device : str, default="cpu"
        Torch solver only: ``"cpu"`` or ``"cuda"``.
    dtype : {"float64", "float32"}, default="float64"
        Torch solver only. float32 on the exact program finishes in float64 once its duality gap
        stalls (see :func:`convexbn.solvers.torch.solve_torch`, ``finish_dtype``).
    max_iter : int or None, default=None
        Iteration limit passed to the backend (Clarabel ``max_iter``, SCS ``max_iters``, torch
        ``max_iter``); ``None`` keeps the backend's default.
    tol : float or None, default=None
        Tolerance passed to the backend (Clarabel gap and feasibility tolerances, SCS ``eps_abs`` and
        ``eps_rel``, MOSEK's relative gap, torch ``tol``); ``None`` keeps the backend's default.
    warm_start : bool, default=False
        Start from the previous fit's patterns (and, for the torch solver, its groups) when the data is
        the same (e.g. a path over ``beta``; set ``beta`` with ``set_params`` and refit).
    random_state : int, RandomState or None, default=None
        Seed of the pattern sampling and of the search's random starts.
    n_jobs : int or None, default=None
        Number of one-vs-rest programs solved in parallel (``sklearn.utils.parallel``; any joblib
        backend, e.g. Dask or Ray).
    verbose : int, default=0
        Solver output.
    implicit_reg : None, str or float, default=None
        Spectral filter encoding gradient descent's implicit regularization (docs/math.md section 9,
        :mod:`convexbn.implicit_reg`): ``"power:t"`` (or the float ``t``) builds the program on
        ``[U (S/S_max)^t, 1/sqrt(n)]``, ``"top:k"`` / ``"tau:x"`` on the leading singular directions
        only. ``None``: the plain program. The network is still a BN network; ``equivalence_gap_`` then
        compares with the filter's weighted objective (:func:`convexbn.implicit_reg.implicit_objective`).
    neurons : {"auto", "shared", "per_output"}, default="auto"
        ``"shared"``: one network whose hidden neurons feed every output (program (8a), grown by its
        oracle, :func:`convexbn.fit.fit_shared`). ``"per_output"``: one program (4) per output, networks
        side by side. ``"auto"``: shared for several outputs (3+ classes) and for one output above small
        data (``n (rank + 1) > 10,000`` or ``rank + 1 > 128``, not the closed form; the shared program
        with one output is program (4) over every pattern), when the loss is smooth, ``solver`` is
        ``"auto"`` or ``"torch"`` and there is no ``implicit_reg``; per-output otherwise. ``neurons_`` says
        which.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    network_ : BNNetwork
        The recovered network; ``network_.to_torch()`` exports it as a PyTorch module.
    n_neurons_ : int
        Number of hidden neurons of ``network_`` (nonzero groups of the convex solution).
    objective_ : float
        The objective at the solution, in the estimator's scaling (mean loss + weight decay).
    beta_ : float
        The weight decay per sample used (``beta``, or the value ``"auto"`` chose).
    lower_bound_ : float
        A certified lower bound on the global optimum of the class (every pattern, every width), same
        scaling: from the enumerated patterns when ``arrangements_method_ == "enumerate"``, else the
        universal bound of :mod:`convexbn.fit` (valid, often loose).
    gap_ : float
        ``(objective_ - lower_bound_) / objective_``.
    certified_ : bool
        Every pattern was checked and ``gap_ <= 1e-4``: a certified global optimum.
    estimated_gap_ : float
        The gap if no pattern is more violated than the search found (not a certificate).
    dual_ratio_ : float
        Largest dual value found over ``beta`` (own patterns and the oracle): at most about 1 when the
        search found no pattern that would lower the objective.
    arrangements_method_ : str
        ``"search"``, ``"sample"`` or ``"enumerate"``.
    history_ : list of dict
        Per search round: ``round``, ``n_patterns``, ``objective`` (estimator scaling), ``seconds``.
    fit_ : ConvexFit
        The fit core's full result (solutions, per-program bounds); not saved by :meth:`save`.
    solver_ : str
        The backend used (``"closed_form"``, ``"clarabel"``, ``"mosek"``, ``"scs"`` or ``"torch"``);
        ``"clarabel,torch"`` when ``solver="auto"`` had to fall back on some of the programs.
    n_iter_ : int
        Largest iteration count over the programs (1 for the closed form).
    n_arrangements_ : int
        Distinct patterns of the final program (the search's grown set).
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
    >>> clf = make_pipeline(StandardScaler(), ConvexBNClassifier(random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.9
    True
    """

    _losses = ("logistic", "squared", "hinge", "cross_entropy")

    # the signature repeats the base class's because scikit-learn reads parameters (and their defaults,
    # here loss="logistic") from each estimator's own __init__
    def __init__(
        self,
        beta="auto",
        loss="logistic",
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
        super().__init__(
            beta=beta, loss=loss, neurons=neurons, arrangements=arrangements, n_arrangements=n_arrangements,
            search_rounds=search_rounds, time_limit=time_limit, solver=solver, device=device,
            dtype=dtype, max_iter=max_iter, tol=tol, warm_start=warm_start,
            random_state=random_state, n_jobs=n_jobs, verbose=verbose, implicit_reg=implicit_reg,
        )  # fmt: skip

    def fit(self, X, y):
        """Fit the network to the global optimum of the convex program on the searched patterns.

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


@register_estimator
class ConvexBNRegressor(RegressorMixin, _ConvexBNBase):
    """Two-layer ReLU+BN network regressor trained to the global optimum of its convex reformulation,
    with the activation patterns grown by the dual oracle.

    Squared loss; several target columns give one network whose neurons feed every output
    (``neurons="auto"``), or one program per output solved in parallel with ``n_jobs``
    (``neurons="per_output"``; docs/math.md section 8). Parameters and attributes are those of
    :class:`ConvexBNClassifier` (``loss`` accepts only ``"squared"``; there is no ``classes_`` or
    ``predict_proba``).

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import StandardScaler
    >>> from convexbn import ConvexBNRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> reg = ConvexBNRegressor(beta=1e-2, random_state=0).fit(X, y / y.std())
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
