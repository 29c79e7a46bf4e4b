"""The two-layer ReLU network with a normalization layer, as a ``torch.nn.Module``.

``TwoLayerNet(norm=...)`` is ``Linear(d, m) -> norm -> ReLU -> Linear(m, C)``:

- ``norm="batch"`` -- the exact parametrization of docs/math.md section 1, eq. (1)-(3)
(:class:`SpecBatchNorm`);
- ``norm="batchnorm1d"`` -- PyTorch's standard ``nn.BatchNorm1d`` (no ``1/sqrt(n)`` in the BN output);
- ``norm="full"`` -- Full Normalization (:class:`FullNormalization`);
- ``norm="population"`` -- population normalization (:class:`PopulationNormalization`);
- ``norm="none"`` -- no normalization, biases in both layers (the plain net; BNP trains this one).

Every BN variant carries the same parameters ``(w, gamma, alpha, v)``, and :meth:`TwoLayerNet.objective`
is objective (3) with the full-data statistics (docs/math.md eq. (3)): the number the convex solver reports.
:meth:`TwoLayerNet.spec_parameters` / :meth:`TwoLayerNet.to_network` convert any BN variant, PyTorch's
included, to the parametrization of docs/math.md section 1; :meth:`TwoLayerNet.from_network` and
:meth:`TwoLayerNet.from_batchnorm1d` go the other way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_data, check_positive_int
from ..losses import get_loss
from ..network import BNNetwork
from .layers import FullNormalization, NormLayer, PopulationNormalization, SpecBatchNorm, exact_statistics

__all__ = ["TwoLayerNet", "NORMS"]

NORMS = ("batch", "batchnorm1d", "full", "population", "none")


class TwoLayerNet(nn.Module):
    """Two-layer ReLU network with a normalization layer before the ReLU.

    Parameters
    ----------
    n_features, n_neurons, n_outputs : int
        ``d``, ``m``, ``C``.
    n_train : int
        Training-set size ``n`` (eq. (1)'s ``1/sqrt(n)``; also the weight-decay scale of ``batchnorm1d``).
    norm : str
        One of :data:`NORMS`.
    eps : float, optional
        The normalization's ``eps`` (default: 0 for ``"batch"``, 1e-5 for ``"batchnorm1d"``, 1e-8 for
        ``"full"`` and ``"population"``).
    init_scale : float
        BN variants: ``w ~ N(0, I)``, ``gamma ~ init_scale * U(0.5, 1.5)``, ``alpha = 0``,
        ``v ~ init_scale * N(0, 1/m)``. ``"none"``: PyTorch's default ``Linear`` initialization.
    generator : torch.Generator, optional
        Source of the initialization.
    dtype : torch.dtype
        Of the parameters (default float64, so objective values compare with the convex solver's).
    **norm_options
        Passed to the normalization layer (``momentum``, ``stat_schedule``).

    Attributes
    ----------
    first : nn.Linear
        ``(m, d)`` weight; bias only for ``norm="none"`` (BN's centering removes it).
    norm : nn.Module
    output : nn.Linear
        ``(C, m)`` weight; bias only for ``norm="none"``.
    """

    def __init__(
        self,
        n_features: int,
        n_neurons: int,
        n_outputs: int = 1,
        *,
        n_train: int,
        norm: str = "batch",
        eps: float | None = None,
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        **norm_options,
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        for value, name in ((n_features, "n_features"), (n_neurons, "n_neurons"), (n_outputs, "n_outputs")):
            check_positive_int(value, name)
        if check_positive_int(n_train, "n_train") < 2 and norm != "none":
            raise ValueError(f"n_train must be >= 2 for a normalized network, got {n_train}")
        self.norm_kind = norm
        self.n_train = int(n_train)
        plain = norm == "none"
        self.first = nn.Linear(n_features, n_neurons, bias=plain)
        if norm == "batch":
            self.norm = SpecBatchNorm(n_neurons, n_train, 0.0 if eps is None else eps, **norm_options)
        elif norm == "batchnorm1d":
            self.norm = nn.BatchNorm1d(n_neurons, eps=1e-5 if eps is None else eps, **norm_options)
        elif norm == "full":
            self.norm = FullNormalization(n_neurons, n_train, 1e-8 if eps is None else eps, **norm_options)
        elif norm == "population":
            self.norm = PopulationNormalization(
                n_neurons, n_train, 1e-8 if eps is None else eps, **norm_options
            )
        else:
            self.norm = nn.Identity()
        self.output = nn.Linear(n_neurons, n_outputs, bias=plain)
        self.to(dtype)
        if not plain:
            self.reset_parameters(init_scale, generator)

    @property
    def has_bn(self) -> bool:
        return self.norm_kind != "none"

    @torch.no_grad()
    def reset_parameters(self, init_scale: float = 1.0, generator: torch.Generator | None = None) -> None:
        """The BN variants' initialization (see the class docstring); draws in the order W, gamma, V."""
        d, m, C = self.first.in_features, self.first.out_features, self.output.out_features
        dtype = self.first.weight.dtype
        self.first.weight.copy_(torch.randn(d, m, generator=generator, dtype=dtype).T)
        self._gamma().copy_(init_scale * (0.5 + torch.rand(m, generator=generator, dtype=dtype)))
        self._alpha().zero_()
        self.output.weight.copy_(
            init_scale * torch.randn(m, C, generator=generator, dtype=dtype).T / math.sqrt(m)
        )

    def _gamma(self):
        return self.norm.weight if isinstance(self.norm, nn.BatchNorm1d) else self.norm.gamma

    def _alpha(self):
        return self.norm.bias if isinstance(self.norm, nn.BatchNorm1d) else self.norm.alpha

    def preactivation(self, X: torch.Tensor) -> torch.Tensor:
        """Normalized pre-ReLU values ``h``, shape (n, m)."""
        return self.norm(self.first(X))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.preactivation(X)))

    def penalty(self, beta: float) -> torch.Tensor:
        """Weight decay of objective (3): ``(beta/2) sum_j (gamma_j^2 + alpha_j^2 + ||v_j||^2)``.

        In PyTorch's parametrization (``batchnorm1d``) ``v = sqrt(n) * output.weight``, so the output weights
        carry ``n`` times the decay. The plain net (``"none"``) decays both weight matrices (not the biases).
        """
        if not self.has_bn:
            return 0.5 * beta * (self.first.weight.square().sum() + self.output.weight.square().sum())
        scale = self.n_train if self.norm_kind == "batchnorm1d" else 1.0
        return (
            0.5
            * beta
            * (
                self._gamma().square().sum()
                + self._alpha().square().sum()
                + scale * self.output.weight.square().sum()
            )
        )

    def full_data_forward(self, X: torch.Tensor) -> torch.Tensor:
        """Outputs with every normalization using the statistics of ``X`` itself (eq. (1) on ``X``)."""
        if self.norm_kind == "batchnorm1d":
            bn = self.norm
            H = nn.functional.batch_norm(self.first(X), None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
            return self.output(torch.relu(H))
        with exact_statistics(self):
            return self(X)

    def objective(self, X: torch.Tensor, Y: torch.Tensor, loss, beta: float) -> torch.Tensor:
        """Objective (3) on the full data ``X`` (summed loss of the full-data forward pass plus the decay).

        For ``batchnorm1d`` this is objective (3) of :meth:`spec_parameters` (its ``eps`` moved into gamma).
        """
        lossf = get_loss(loss)
        value = lossf.torch_value(self.full_data_forward(X), Y)
        if self.norm_kind != "batchnorm1d":
            return value + self.penalty(beta)
        _, gamma, alpha, V = self.spec_parameters(X)
        return value + 0.5 * beta * (gamma.square().sum() + alpha.square().sum() + V.square().sum())

    def spec_parameters(self, X: torch.Tensor):
        """``(W, gamma, alpha, V)`` in the parametrization of docs/math.md section 1 with the same full-data
        function on ``X``.

        Returns tensors of shapes (d, m), (m,), (m,), (m, C). For ``batchnorm1d``, with the biased variance
        ``s^2`` of ``X w_j``: ``gamma = weight * s / sqrt(s^2 + eps)`` and ``V = sqrt(n) * output.weight^T``.
        """
        if not self.has_bn:
            raise ValueError("the plain network (norm='none') has no BN parametrization")
        W = self.first.weight.T
        gamma, alpha, V = self._gamma(), self._alpha(), self.output.weight.T
        if self.norm_kind == "batchnorm1d":
            var = self.first(X).var(0, unbiased=False)
            gamma = gamma * torch.sqrt(var / (var + self.norm.eps))
            V = math.sqrt(X.shape[0]) * V
        return W, gamma, alpha, V

    def to_network(self, X, beta: float, loss: str = "squared") -> BNNetwork:
        """The network as a :class:`convexbn.BNNetwork` with the training statistics of ``X``.

        Its numpy ``objective(X, y)`` equals :meth:`objective` (same function, same penalty).
        """
        X = check_data(X)
        if X.shape[1] != self.first.in_features:
            raise ValueError(f"X has {X.shape[1]} features, the model expects {self.first.in_features}")
        Xt = torch.as_tensor(X, dtype=self.first.weight.dtype, device=self.first.weight.device)
        with torch.no_grad():
            W, gamma, alpha, V = (t.detach().cpu().numpy() for t in self.spec_parameters(Xt))
        return BNNetwork.from_parameters(X, W, gamma, alpha, V, beta, get_loss(loss).name)

    @classmethod
    def from_network(cls, network: BNNetwork, *, norm: str = "batch", dtype=torch.float64) -> TwoLayerNet:
        """A ``TwoLayerNet`` with ``network``'s parameters and eval statistics.

        ``norm`` may be ``"batch"``, ``"full"`` or ``"population"`` (all share the parametrization of
        docs/math.md section 1); for PyTorch's module use :meth:`BNNetwork.to_torch`.
        """
        if norm not in ("batch", "full", "population"):
            raise ValueError(f"from_network builds norm 'batch', 'full' or 'population', not {norm!r}")
        model = cls(
            network.n_features,
            network.n_neurons,
            network.n_outputs,
            n_train=network.n_train,
            norm=norm,
            dtype=dtype,
        )
        with torch.no_grad():
            model.first.weight.copy_(torch.as_tensor(network.weights.T))
            model.norm.gamma.copy_(torch.as_tensor(network.gamma))
            model.norm.alpha.copy_(torch.as_tensor(network.alpha))
            model.output.weight.copy_(torch.as_tensor(network.output.T))
            model.norm.running_mean.copy_(torch.as_tensor(network.running_mean))
            model.norm.running_var.copy_(torch.as_tensor(network.running_norm**2 / network.n_train))
            if isinstance(model.norm, FullNormalization):
                model.norm.running_square.copy_(model.norm.running_var + model.norm.running_mean.square())
            model.norm.n_updates.fill_(1)
        return model

    @classmethod
    def from_batchnorm1d(cls, module: nn.Sequential, X) -> TwoLayerNet:
        """Convert PyTorch's ``Sequential(Linear, BatchNorm1d, ReLU, Linear)`` to the network of docs/math.md
        section 1.

        The result (``norm="batch"``, ``eps = 0``, ``n_train = len(X)``) computes the same function as
        ``module`` in train mode on ``X``: ``gamma = weight * s / sqrt(s^2 + eps)`` with ``s^2`` the biased
        variance of the first layer's output on ``X``, ``alpha = bias``, ``v = sqrt(n) * last.weight^T``;
        the first layer's bias drops out (BN centers it away). Its eval statistics are those of ``X``.

        Raises
        ------
        ValueError
            If ``module`` is not of that form or its last layer has a bias (the network of docs/math.md
            section 1 has none).
        """
        layers = list(module)
        ok = (
            len(layers) == 4
            and isinstance(layers[0], nn.Linear)
            and isinstance(layers[1], nn.BatchNorm1d)
            and isinstance(layers[2], nn.ReLU)
            and isinstance(layers[3], nn.Linear)
        )
        if not ok:
            raise ValueError("expected nn.Sequential(Linear, BatchNorm1d, ReLU, Linear)")
        first, bn, _, last = layers
        if last.bias is not None:
            raise ValueError(
                "the last Linear has a bias; the network of docs/math.md eq. (2) has no output bias"
            )
        dtype = first.weight.dtype
        X = check_data(X)
        if X.shape[1] != first.in_features:
            raise ValueError(f"X has {X.shape[1]} features, the module expects {first.in_features}")
        Xt = torch.as_tensor(X, dtype=dtype, device=first.weight.device)
        n = Xt.shape[0]
        model = cls(
            first.in_features, first.out_features, last.out_features, n_train=n, norm="batch", dtype=dtype
        )
        with torch.no_grad():
            Z = Xt @ first.weight.T
            mean, var = Z.mean(0), Z.var(0, unbiased=False)
            model.first.weight.copy_(first.weight)
            model.norm.gamma.copy_(bn.weight * torch.sqrt(var / (var + bn.eps)))
            model.norm.alpha.copy_(bn.bias)
            model.output.weight.copy_(math.sqrt(n) * last.weight)
            model.norm.running_mean.copy_(mean)
            model.norm.running_var.copy_(var)
            model.norm.n_updates.fill_(1)
        return model

    def effective_learning_rate(self, lr: float) -> float:
        """``lr / ||w_j||^2`` averaged over neurons: the step BN's scale invariance makes effective."""
        norms = self.first.weight.detach().square().sum(1)
        return float((lr / norms.clamp_min(torch.finfo(norms.dtype).tiny)).mean())


def norm_layers(model: nn.Module) -> list[NormLayer]:
    return [mod for mod in model.modules() if isinstance(mod, NormLayer)]


def population_layers(model: nn.Module) -> list[PopulationNormalization]:
    return [mod for mod in model.modules() if isinstance(mod, PopulationNormalization)]
