"""The dual certificate of a trained network (docs/math.md sections 6 and 8): build the program of its
training data, take the network's own gradient as the dual point and check it over the network's patterns
and a sample, or every pattern (:func:`certify_network`; shared networks against condition (8b)).

It composes the basis, the arrangements, the program and the neuron oracle, so it sits above them;
:mod:`convexbn.certificate` holds the certificate of a program's solution, which they use.
"""

from __future__ import annotations

import numpy as np

from .arrangements import Arrangements, make_arrangements, merge_arrangements, network_arrangements
from .basis import bn_basis
from .certificate import Certificate, _certificate
from .losses import get_loss
from .neuron_search import ascent_neurons, exact_shared_value
from .problem import ConvexBNProblem
from .shared_problem import SharedOutputProblem, network_atoms

__all__ = ["certify_network"]


def certify_network(
    network,
    X,
    y,
    *,
    arrangements: Arrangements | None = None,
    n_arrangements: int = 200,
    random_state=0,
    tol: float = 1e-4,
) -> Certificate:
    """Check the dual certificate of a (saved, or SGD-trained) BN network on its training data.

    The network needs no solver: ``lambda = -grad L(F)`` at its training-mode outputs ``F`` on ``X``
    (a subgradient for the hinge loss) is tested against every checked pattern (docs/math.md section 6), with
    the network's own ``beta`` and loss. The checked patterns are the network's own activation patterns
    (:func:`~convexbn.network_arrangements`), which make it a feasible point of the program, merged with
    ``arrangements`` (default :func:`~convexbn.make_arrangements` with ``n_arrangements``: all patterns when
    the Cover bound is that small, else a fresh sample). Then ``lower_bound <= optimum over the checked
    patterns <= objective`` (the network's objective (3)), and with every pattern (``exact``) the lower bound
    bounds the global optimum of (3), so a zero gap certifies the network as globally optimal.

    Parameters
    ----------
    network : BNNetwork
        With one output or with each hidden neuron feeding one output: the certificate of the per-output
        class (docs/math.md section 8) over the checked patterns. With a neuron feeding several outputs (a
        shared-neuron network, docs/math.md section 8): the certificate of the shared class, condition
        (8b), over the network's own neurons and, when ``arrangements`` holds every pattern, exactly
        (``exact_shared_value``); otherwise over the neurons the ascent oracle visits from random starts,
        which bounds the optimum over those neurons only (``exact`` False). Smooth losses only.
    X : array-like of shape (n, d)
        The network's training data (BN's statistics are those of ``X``).
    y : array-like
        Targets encoded as ``network.loss`` expects.
    arrangements : Arrangements, optional
        Patterns of ``bn_basis(X)`` to check besides the network's own.
    n_arrangements, random_state
        For the default ``arrangements``.
    tol : float
        Relative gap below which ``certified`` is True.
    """

    X = network._check_X(X)
    shared = np.count_nonzero(network.output, axis=1) > 1
    basis = bn_basis(X)
    if arrangements is None:
        arrangements = make_arrangements(basis, n_arrangements, random_state=random_state)
    elif arrangements.n_samples != X.shape[0]:
        raise ValueError("arrangements were built for a different number of samples")
    if np.any(shared):
        return _shared_certificate(network, X, y, basis, arrangements, random_state, tol)
    checked = arrangements
    if network.n_neurons:
        checked = merge_arrangements(arrangements, network_arrangements(basis, network))
    problem = ConvexBNProblem(basis, checked, y, beta=network.beta, loss=network.loss)
    F = network.forward(X, training=True)
    if F.shape != problem.Y.shape:
        raise ValueError(f"y encodes to shape {problem.Y.shape}, the network outputs {F.shape}")
    grad = problem.loss.grad(F, problem.Y)
    return _certificate(problem, checked, grad, network.objective(X, y), tol)


def _shared_certificate(network, X, y, basis, arrangements, random_state, tol: float) -> Certificate:
    """:func:`certify_network` for a network whose neurons feed several outputs (condition (8b))."""

    lossf = get_loss(network.loss)
    if not lossf.smooth:
        raise ValueError(
            f"the shared-neuron certificate needs a smooth loss, the network's is {lossf.name!r}"
        )
    Y = lossf.encode_targets(y)
    F = network.forward(X, training=True)
    if F.shape != Y.shape:
        raise ValueError(f"y encodes to shape {Y.shape}, the network outputs {F.shape}")
    grad = lossf.grad(F, Y)
    lam = -grad
    own = SharedOutputProblem(basis, network_atoms(X, network), Y, network.beta, lossf.name)
    value = float(own.atom_dual_values(lam).max(initial=0.0))
    if arrangements.exact:
        value = max(value, exact_shared_value(basis.Uprime, lam, arrangements.mask)[0])
        checked = arrangements.n_patterns
    else:
        found = ascent_neurons(basis.Uprime, lam, n_starts=max(arrangements.n_patterns, 200),
                               random_state=random_state)[3]  # fmt: skip
        value = max(value, float(found[0]) if len(found) else 0.0)
        checked = int(len(found))
    objective = network.objective(X, y)
    lower = own.dual_bound(F, value)
    rel = (objective - lower) / max(abs(objective), 1e-12)
    return Certificate(
        max_dual_value=value, ratio=value / network.beta, objective=objective, lower_bound=lower,
        gap=objective - lower, relative_gap=rel, certified=bool(rel <= tol), exact=bool(arrangements.exact),
        n_checked=checked, worst_pattern=-1, tol=tol,
    )  # fmt: skip
