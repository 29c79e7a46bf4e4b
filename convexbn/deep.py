"""Deeper BN networks, layer by layer (docs/math.md section 10, "Deep networks: layerwise").

A deep ReLU network with BN before every ReLU,

    A_0 = X,   A_l = relu(BN_{gamma_l, alpha_l}(A_{l-1} W_l)),   f(X) = A_{L-1} V  (per output: a BN layer
    and the output weights on top of A_{L-2}),

is, for fixed inner layers, the two-layer network of docs/math.md eq. (2) on the inputs ``A = A_{L-2}``: its
last BN layer and output weights solve the two-layer convex program (4) built on the BN basis of ``A``
(centering and SVD of ``A`` in place of ``X``). :func:`fit_layerwise` trains such a network greedily:
stage ``l`` solves the two-layer program on ``A_{l-1}`` with the task's targets, keeps the recovered BN
layer as hidden layer ``l`` and feeds its activations to stage ``l + 1``; the last stage's output weights
are the network's. Each stage is a global optimum over its own layer given the ones below (certifiable
with :func:`convexbn.certify` on the stage's problem), not a global optimum over all layers jointly.

What is derived here rather than taken from the paper: the objective of the deep network is docs/math.md's
weight decay on every BN parameter and on the output weights,

    L(f(X), y) + (beta / 2) [ sum_l sum_j (gamma_lj^2 + alpha_lj^2) + sum_j ||v_j||^2 ],

so at the recovered network it equals the last stage's convex optimum plus the inner layers'
``(beta / 2) sum (gamma^2 + alpha^2)``. That inner term carries no information: the next layer's BN is
invariant to a positive rescaling of its input's columns, so scaling an inner layer's ``(gamma, alpha)`` by
``c > 0`` leaves ``f`` unchanged and scales the term by ``c^2``; its infimum is 0, and the infimum of the
deep objective over the inner layers' scales is the last stage's convex optimum
(:meth:`DeepBNNetwork.rescale_hidden` does the rescaling). In the wide case (the centered rank of ``A`` is
``n - 1``) the last stage is the closed form of docs/math.md section 7: the soft-thresholded labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.utils import check_random_state

from ._validation import check_data, check_positive_int
from .arrangements import make_arrangements
from .basis import bn_basis
from .losses import get_loss
from .network import BNNetwork
from .problem import ConvexBNProblem, ConvexBNSolution
from .recovery import recover_network

__all__ = ["DeepBNNetwork", "LayerwiseResult", "fit_layerwise"]


@dataclass
class DeepBNNetwork:
    """A ReLU network with BN before every ReLU: hidden BN layers, then a BN layer with output weights.

    Attributes
    ----------
    hidden : list of BNNetwork
        The inner layers, in order; layer ``l`` maps ``A_{l-1}`` to ``A_l = hidden[l].hidden(A_{l-1})``.
        Only their first-layer weights, ``gamma``, ``alpha`` and statistics enter ``f``; their ``output``
        holds the auxiliary output weights of the layerwise stage that trained them (not part of ``f``).
    head : BNNetwork
        The last BN layer and the output weights, on the last inner layer's activations.
    """

    hidden: list
    head: BNNetwork

    @property
    def n_layers(self) -> int:
        """Number of BN-ReLU layers (inner ones plus the head's)."""
        return len(self.hidden) + 1

    @property
    def widths(self) -> list:
        """Neurons per BN layer, input side first."""
        return [layer.n_neurons for layer in self.hidden] + [self.head.n_neurons]

    def activations(self, X, *, training: bool = False) -> list:
        """``[A_0 = X, A_1, ..., A_{L-1}]``: the input of every BN layer (training- or eval-mode BN)."""
        A = [check_data(X, min_samples=1)]
        for layer in self.hidden:
            A.append(layer.hidden(A[-1], training=training))
        return A

    def forward(self, X, *, training: bool = False) -> np.ndarray:
        """Outputs, shape (n, C)."""
        return self.head.forward(self.activations(X, training=training)[-1], training=training)

    def predict(self, X) -> np.ndarray:
        """Eval-mode outputs; shape (n,) for one output, else (n, C)."""
        F = self.forward(X, training=False)
        return F[:, 0] if F.shape[1] == 1 else F

    def inner_penalty(self) -> float:
        """``(beta / 2) sum over inner layers of (gamma^2 + alpha^2)``."""
        beta = self.head.beta
        return 0.5 * beta * float(sum(np.sum(h.gamma**2) + np.sum(h.alpha**2) for h in self.hidden))

    def penalty(self) -> float:
        """Weight decay on every BN parameter and on the output weights (module docstring)."""
        return self.inner_penalty() + self.head.penalty()

    def objective(self, X, y) -> float:
        """The loss of a training-mode forward pass on ``X`` plus :meth:`penalty`."""
        loss = get_loss(self.head.loss)
        F = self.forward(X, training=True)
        Y = loss.encode_targets(y)
        if Y.shape != F.shape:
            raise ValueError(f"y encodes to shape {Y.shape}, the network outputs {F.shape}")
        return loss.value(F, Y) + self.penalty()

    def rescale_hidden(self, factor: float) -> DeepBNNetwork:
        """A copy with every inner layer's ``(gamma, alpha)`` scaled by ``factor > 0``.

        The function is unchanged (the next layer's BN removes a positive column scaling; its eval-mode
        statistics are scaled to match) and :meth:`inner_penalty` scales by ``factor^2``.
        """
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        layers = [_replace(h, gamma=h.gamma * factor, alpha=h.alpha * factor) for h in self.hidden]
        # each layer after a rescaled one sees inputs scaled by `factor`: its statistics scale too
        layers = [layers[0]] + [
            _replace(h, running_mean=h.running_mean * factor, running_norm=h.running_norm * factor)
            for h in layers[1:]
        ]
        head = _replace(
            self.head,
            running_mean=self.head.running_mean * factor,
            running_norm=self.head.running_norm * factor,
        )
        return DeepBNNetwork(hidden=layers, head=head)


def _replace(network: BNNetwork, **changes) -> BNNetwork:
    fields = {name: getattr(network, name) for name in network.__dataclass_fields__}
    fields.update(changes)
    return BNNetwork(**{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in fields.items()})


@dataclass
class LayerwiseResult:
    """Result of :func:`fit_layerwise`.

    Attributes
    ----------
    network : DeepBNNetwork
    solutions : list of ConvexBNSolution
        One per stage; ``solutions[-1].objective`` is the last stage's convex optimum.
    objective : float
        The deep network's objective (:meth:`DeepBNNetwork.objective`) by a forward pass on ``X``.
    equivalence_gap : float
        ``|objective - (last stage's optimum + inner penalty)|`` relative: the deep equivalence, checked.
    """

    network: DeepBNNetwork
    solutions: list = field(default_factory=list)
    objective: float = float("nan")
    equivalence_gap: float = float("nan")


def fit_layerwise(
    X,
    y,
    n_layers: int,
    beta: float,
    *,
    loss: str = "squared",
    n_arrangements: int | list = 100,
    solver: str = "clarabel",
    solver_options: dict | None = None,
    random_state=None,
) -> LayerwiseResult:
    """Train a deep BN network layer by layer, each layer a global optimum of its two-layer program.

    Parameters
    ----------
    X : array-like of shape (n, d)
    y : array-like
        Targets, encoded by ``loss`` as :class:`ConvexBNProblem` encodes them; every stage fits them.
    n_layers : int
        Number of BN-ReLU layers (>= 1; 1 is the two-layer network of the spec).
    beta : float
        Weight decay (spec scale: summed loss), the same for every stage.
    loss : str
    n_arrangements : int or list of int
        Patterns per stage (:func:`convexbn.make_arrangements`: exact enumeration when affordable).
    solver, solver_options :
        Backend of :meth:`ConvexBNProblem.solve` and its options.
    random_state : int, optional
        Seeds the pattern sampling of every stage.

    Returns
    -------
    LayerwiseResult

    Raises
    ------
    ValueError
        If a stage's solution has no neuron (``beta`` too large to build on), or its activations have no
        variance.
    """
    X = check_data(X)
    n_layers = check_positive_int(n_layers, "n_layers")
    counts = [n_arrangements] * n_layers if np.isscalar(n_arrangements) else list(n_arrangements)
    if len(counts) != n_layers:
        raise ValueError(f"n_arrangements has {len(counts)} entries for {n_layers} layers")
    rng = check_random_state(random_state)  # one stream over the stages
    A = X
    hidden, solutions = [], []
    for stage in range(n_layers):
        basis = bn_basis(A)
        arrangements = make_arrangements(basis, counts[stage], random_state=rng)
        problem = ConvexBNProblem(basis, arrangements, y, beta, loss=loss)
        solution: ConvexBNSolution = problem.solve(solver, **(solver_options or {}))
        solutions.append(solution)
        network = recover_network(solution)
        if stage == n_layers - 1:
            head = network
            break
        if network.n_neurons == 0:
            raise ValueError(
                f"layer {stage + 1} of {n_layers} has no neuron at beta={beta:g} (the zero network is "
                "optimal): lower beta to build deeper layers on it"
            )
        hidden.append(network)
        A = network.hidden(A, training=True)
    deep = DeepBNNetwork(hidden=hidden, head=head)
    objective = deep.objective(X, y)
    expected = solutions[-1].objective + deep.inner_penalty()
    gap = abs(objective - expected) / max(abs(expected), 1e-12)
    return LayerwiseResult(network=deep, solutions=solutions, objective=objective, equivalence_gap=gap)
