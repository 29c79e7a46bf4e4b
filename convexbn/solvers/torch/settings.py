"""Each torch method's options as its own small settings object, validated when made.

:func:`convexbn.solvers.torch.solve_torch` takes the options as keywords (what ``problem.solve("torch",
...)`` and the estimators pass) and builds the chosen method's settings with :func:`settings_for`; an option
of another method is ignored there (``method="auto"`` may pick any), a name no method knows is a
``TypeError``. The methods themselves take a settings object.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass

import torch

from ..._validation import check_positive, check_positive_int
from .common import check_device_dtype

__all__ = ["TorchSettings", "FistaSettings", "ALSettings", "ADMMSettings", "SETTINGS", "all_settings",
           "settings_for"]  # fmt: skip


def _check_feas_tol_and_rho(settings) -> None:
    """The checks the AL and ADMM settings share."""
    check_positive(settings.feas_tol, "feas_tol")
    if settings.rho is not None:
        _check_positive_real(settings.rho, "rho")


def _check_positive_real(value, name: str) -> None:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class TorchSettings:
    """Options every torch method takes.

    Attributes
    ----------
    device : str
        ``"cpu"`` or ``"cuda"`` (a ``ValueError`` if CUDA is asked for and absent).
    dtype : torch.dtype or str
        ``torch.float64`` (default) or ``torch.float32``.
    max_iter : int
        Budget of iterations (over all phases).
    tol : float
        The method's stopping tolerance (FISTA: certified relative duality gap; AL: relative minimum-norm
        subgradient; ADMM: relative primal and dual residuals).
    checkpoint : path or None
        Save the state there every ``checkpoint_every`` iterations (atomically).
    checkpoint_every : int
        Iterations between checkpoints (0: only at the end of an unfinished solve).
    resume : bool
        Continue from ``checkpoint`` when it exists.
    progress : bool
        A tqdm progress bar over iterations.
    verbose : bool
        Print the method's progress lines.
    threads : int or None
        torch's intra-op threads during the solve (None: chosen from the problem's size,
        :func:`convexbn.solvers.torch.threads_for`; restored after).
    """

    device: str = "cpu"
    dtype: torch.dtype | str = torch.float64
    max_iter: int = 20_000
    tol: float = 1e-6
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 200
    resume: bool = False
    progress: bool = False
    verbose: bool = False
    threads: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "dtype", check_device_dtype(self.device, self.dtype))
        if self.threads is not None:
            check_positive_int(self.threads, "threads")
        check_positive_int(self.max_iter, "max_iter")
        check_positive(self.tol, "tol")
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 0:
            raise ValueError(f"checkpoint_every must be a nonnegative integer, got {self.checkpoint_every!r}")


@dataclass(frozen=True)
class FistaSettings(TorchSettings):
    """FISTA with the exact cone prox (:mod:`convexbn.solvers.torch.fista`).

    Attributes
    ----------
    check_every : int
        Iterations between duality-gap checks (and callback calls).
    finish_dtype : "auto", "float64" or None
        Mixed precision: a float32 solve whose gap stalls above ``tol`` goes on in float64.
    memory_limit : int or None
        Bytes for the temporaries of the products and projections (blocks of samples and groups).
    projection : {"auto", "torch", "numba"}
        The cone projections' implementation.
    polish : bool
        Newton polishing on the support and faces at the gap checks (:mod:`convexbn.solvers.torch.polish`;
        float64 iterates, at most ``polish_max_vars`` variables, its ``n x M`` Jacobian and temporaries
        within ``memory_limit``).
    polish_max_vars : int
        The largest restricted problem (``M`` variables, an ``M x M`` Hessian) a polish takes on.
    """

    check_every: int = 10
    finish_dtype: object = "auto"
    memory_limit: int | None = 64 * 2**20
    projection: str = "auto"
    polish: bool = True
    polish_max_vars: int = 2000

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self.check_every, "check_every")
        check_positive_int(self.polish_max_vars, "polish_max_vars")
        if not isinstance(self.polish, bool):
            raise ValueError(f"polish must be True or False, got {self.polish!r}")
        if self.memory_limit is not None:
            check_positive_int(self.memory_limit, "memory_limit")


@dataclass(frozen=True)
class ALSettings(TorchSettings):
    """Augmented Lagrangian with FISTA inner solves (:mod:`convexbn.solvers.torch.al`); also the plain
    FISTA of the gated relaxation.

    Attributes
    ----------
    feas_tol : float
        Stop once the relative cone violation is below this and the inner problem converged.
    max_outer : int
        Maximum AL rounds.
    rho : float or None
        Initial penalty; None: ``rho_factor`` times the data term's Lipschitz estimate.
    rho_factor, rho_growth : float
        The default initial penalty in units of that estimate; its growth when the violation fails to halve.
    inner_tol0 : float
        The first round's inner tolerance (tightened 5x per round down to ``tol``).
    rel_change : float or None
        Inner stop on the best objective's relative change over 5 iterations (None: 10 eps of the dtype).
    hinge_mu_min : float
        Final smoothing of a nonsmooth loss.
    certify : bool
        Exact program, smooth loss, one process: return the AL's point moved into the cones, with its
        duality-gap certificate ``info["certificate"]``
        (:mod:`~convexbn.solvers.torch.al_certificate`), when the AL ended by its own rule (status
        ``"optimal"``). A solve cut short (``max_iter``, a callback, ``max_outer``) or a point some group
        of which cannot be moved: the AL's own point, and ``info["certificate"]`` is None (a point far
        outside the cones can lose whole groups to the move). False: the AL's own point (in the cones to
        ``feas_tol`` only), no certificate. A distributed solve returns its own point either way.
    gap_tol : float or None
        Also stop, at the end of an AL round, once that certificate has a relative gap at most this
        (needs ``certify``). It is then computed at the end of a round when the last one took at most a
        tenth of the time since (its projection costs a few iterations' work at small ``k``, tens at
        ``k`` in the hundreds), and each gap is against the best lower bound of the rounds so far (each
        bounds the same optimum). None: only the rule above.
    """

    feas_tol: float = 1e-7
    max_outer: int = 60
    rho: float | None = None
    rho_factor: float = 1.0
    rho_growth: float = 2.0
    inner_tol0: float = 1e-3
    rel_change: float | None = None
    hinge_mu_min: float = 1e-7
    certify: bool = True
    gap_tol: float | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_feas_tol_and_rho(self)
        if self.gap_tol is not None:
            check_positive(self.gap_tol, "gap_tol")
        if not isinstance(self.certify, bool):
            raise ValueError(f"certify must be True or False, got {self.certify!r}")
        if self.gap_tol is not None and not self.certify:
            raise ValueError("gap_tol needs certify=True (the certificate is of the projected point)")
        _check_positive_real(self.rho_factor, "rho_factor")


@dataclass(frozen=True)
class ADMMSettings(TorchSettings):
    """ADMM with one Cholesky factor (:mod:`convexbn.solvers.torch.admm`).

    Attributes
    ----------
    feas_tol : float
        Largest relative cone violation of the reported point.
    rho : float or None
        Initial penalty (None: 1).
    relaxation : float
        Over-relaxation factor in [1, 2).
    adapt_rho : bool
        Residual balancing of ``rho``.
    check_every : int
        Iterations between convergence checks (and callback calls).
    """

    feas_tol: float = 1e-7
    rho: float | None = None
    relaxation: float = 1.6
    adapt_rho: bool = True
    check_every: int = 10

    def __post_init__(self):
        super().__post_init__()
        _check_feas_tol_and_rho(self)
        check_positive_int(self.check_every, "check_every")


SETTINGS: dict[str, type[TorchSettings]] = {"fista": FistaSettings, "al": ALSettings, "admm": ADMMSettings}


def all_settings(options: dict) -> dict[str, TorchSettings]:
    """Every method's settings from keyword ``options`` (each takes its own fields, so every option is
    validated by the method it belongs to); a name no method knows is a ``TypeError``."""
    known = {f.name for cls in SETTINGS.values() for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise TypeError(f"solve_torch() got an unexpected keyword argument {names}; the torch methods take "
                        f"{sorted(known)}")  # fmt: skip
    made = {}
    for name, cls in SETTINGS.items():
        own = {f.name for f in dataclasses.fields(cls)}
        made[name] = cls(**{key: value for key, value in options.items() if key in own})
    return made


def settings_for(method: str, options: dict) -> TorchSettings:
    """The settings of ``method`` from keyword ``options``: the method's own fields are taken, another
    method's are validated and ignored, and a name no method knows is a ``TypeError``."""
    return all_settings(options)[method]
