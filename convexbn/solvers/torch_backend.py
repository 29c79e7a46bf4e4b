"""First-order solver in torch (CPU or CUDA): FISTA for the gated relaxation, an augmented Lagrangian
(AL) around FISTA for the exact program (4) with its cone constraints.

Operators (never forming any ``D_i U'``): with ``Z = U' W^T`` per output (shape (C, n, P), one batched
matmul), the prediction is ``F[:, c] = sum_p mask * (Z_pos - Z_neg)`` and the gradient of the data fit is
``(mask * R[:, c])^T U'`` for ``R = grad L(F)``. The cone constraints are ``S * Z >= 0`` with
``S = 2 mask - 1``; their AL term is ``(rho / 2) ||relu(Lambda / rho - S * Z)||^2``.

Cost per FISTA iteration: ``Z`` is linear in W, so the pre-activations at the extrapolated point are the
same extrapolation of the last two iterates' ones (kept), and an iteration costs one gradient there (the
adjoint products) and one forward product per backtracking trial: about ``2 B C n P k`` multiply-adds
for ``B`` blocks (2 for the exact program), half of what evaluating value and gradient at both points
costs. The stopping rule's gradient at the new point is formed every 5th iteration only.

Peak memory (floats of the working dtype): the basis ``n k``, the mask and both signs ``3 n P``, the
multipliers ``2 C n P`` (exact program), and four (2, C, n, P) buffers allocated once per FISTA run (the
last two iterates' pre-activations, the extrapolated ones, the AL residual), into which every elementwise
step writes: roughly ``(3 + 10 C) n P + n k + 12 C P k`` floats. (No chunking over samples yet.) Writing
in place matters on a CPU: at n = 60000, P = 500 a fresh (2, n, P) float32 array costs about three times
the arithmetic of a multiplication in page faults, and the iteration took 2.48 s with fresh arrays against
1.08 s in place (``benchmarks/bench_scale.py``, docs/solvers.md).

FISTA (Beck & Teboulle, 2009) with backtracking on the Lipschitz estimate and function-value adaptive
restart (O'Donoghue & Candes, 2015), as in Mishkin, Sahiner & Pilanci (ICML 2022); inner stopping on the
norm of the minimum-norm subgradient or on the relative change of the best objective over 5 iterations
(``rel_change``; by default 10 epsilons of the dtype, where float32 stalls before the subgradient rule
can be met). AL outer loop: multipliers
``Lambda <- relu(Lambda - rho S Z)``, ``rho`` times ``rho_growth`` (2) when the violation fails to halve,
inexact inner solves whose tolerance tightens by 5x per round (our choices, exposed as parameters; pyscnn's
rule differs in constants). The exact program is warm-started from the gated
solution, split into ``W_pos = w`` where ``D_i U' w`` is mostly positive, else ``W_neg = -w``.
The hinge loss is smoothed (Huber, parameter ``mu``) with continuation ``mu -> mu / 10`` down to
``hinge_mu_min``; the reported objective is always the true, unsmoothed one.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch

from .._validation import check_positive, check_positive_int
from ..exceptions import CheckpointError, SolverError
from .checkpoint import StateSpec, load_checkpoint, problem_fingerprint, save_checkpoint
from .torch_common import check_device_dtype, cone_violation, warm_start_arrays

__all__ = ["solve_torch", "TorchSolverState", "FISTA_MAX_DIM"]

# "auto" uses FISTA with exact cone projections up to this basis dimension k = r + 1: each active-set step
# of the projections solves a batch of (k x k) systems, and a cone face can have up to k - 1 active
# constraints, so the cost grows like k^3 per group (our choice; measured: k = 21 fast, k = 785 impractical)
FISTA_MAX_DIM = 128


class _Operators:
    """The problem's linear maps on one device and dtype."""

    def __init__(self, problem, device, dtype):
        self.device, self.dtype = device, dtype
        self.Up = torch.as_tensor(problem.Uprime, device=device, dtype=dtype)
        self.mask = torch.as_tensor(problem.mask, device=device, dtype=dtype)
        self.signs = 2 * self.mask - 1
        self.neg_signs = -self.signs
        self.Y = torch.as_tensor(problem.Y, device=device, dtype=dtype)
        self.beta = float(problem.beta)
        self.loss = problem.loss
        self.n = self.Up.shape[0]
        # a data-parallel shard (convexbn.distributed) holds some rows of U', the mask and Y; sums over
        # samples are then all-reduced over the processes, so every process takes the same steps
        self.comm = getattr(problem, "communicator", None)

    def reduce_sum(self, tensor):
        """Sum ``tensor`` over the processes of a distributed solve (in place); identity otherwise."""
        return tensor if self.comm is None else self.comm.sum_(tensor)

    def reduce_max(self, value: float) -> float:
        """Largest ``value`` over the processes; identity in a single-process solve."""
        return value if self.comm is None else self.comm.max(value)

    def pre(self, W, out=None):
        """``U' W^T`` per output: (C, n, P) (written into ``out`` when given)."""
        return torch.matmul(self.Up, W.transpose(1, 2), out=out)

    def adjoint(self, G):
        """``G^T U'`` per output, for G of shape (..., C, n, P): (..., C, P, k)."""
        return torch.matmul(G.transpose(-1, -2), self.Up)

    def predict(self, Zdiff):
        """(n, C) outputs from pre-activations ``U' (W_pos - W_neg)^T``."""
        return (self.mask * Zdiff).sum(-1).T


def _loss_value_grad(ops, F, mu):
    if ops.loss.name == "hinge":
        return ops.loss.torch_smoothed(F, ops.Y, mu)
    return ops.loss.torch_value(F, ops.Y), ops.loss.torch_grad(F, ops.Y)


def _group_shrink(V, thresh):
    norms = V.norm(dim=-1, keepdim=True)
    return V * (1 - thresh / norms.clamp_min(1e-300)).clamp_min(0)


class TorchSolverState:
    """Everything the solver needs to continue: saved in checkpoints, restored on resume."""

    FIELDS = (
        "X", "X_prev", "Lam", "rho", "L", "t", "phase", "outer", "inner", "total", "mu",
        "prev_obj", "prev_violation", "history", "g_ref", "obj_check",
    )  # fmt: skip

    def __init__(self, **kw):
        for name in self.FIELDS:
            setattr(self, name, kw.get(name))
        self.stopped = False  # set by a callback; not saved (a resumed solve continues)

    def to_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


def _pre_into(ops, X, out):
    """Pre-activations of every block of X (B, C, P, k) written into ``out`` (B, C, n, P)."""
    for j in range(X.shape[0]):
        ops.pre(X[j], out=out[j])
    return out


def _smooth_value(ops, Z, Lam, rho, exact, mu, V, scratch):
    """Smooth part (loss + AL term) from the pre-activations Z (B, C, n, P), and what its gradient needs.

    Works in the caller's buffers: ``V`` (B, C, n, P) receives ``relu(Lambda - rho S Z)`` (exact
    program; ``rho`` times the AL residual ``relu(Lambda / rho - S Z)``), ``scratch`` (same shape, not Z)
    is overwritten. Returns the value (this process's share, not yet all-reduced in a distributed
    solve) and the loss gradient R (n, C).
    """
    if exact:
        Zd = torch.sub(Z[0], Z[1], out=scratch[0]).mul_(ops.mask)
    else:
        Zd = torch.mul(Z[0], ops.mask, out=scratch[0])
    value, R = _loss_value_grad(ops, Zd.sum(-1).T, mu)
    if not exact:
        return value, R
    torch.addcmul(Lam, ops.signs, Z, value=-rho, out=V).clamp_min_(0)
    return value + (0.5 / rho) * torch.mul(V, V, out=scratch).sum(), R


def _smooth_grad(ops, R, rho, exact, V):
    """Gradient (B, C, P, k) of the smooth part from R and the ``V`` that :func:`_smooth_value` filled
    (overwritten: the adjoint's input is formed in place)."""
    Rt = R.T[:, :, None]
    if not exact:
        torch.mul(ops.mask, Rt, out=V[0])
        return ops.adjoint(V[:1])
    V.mul_(ops.neg_signs)  # the AL term's gradient: -rho S relu(Lambda / rho - S Z) = -S V
    V[0].addcmul_(ops.mask, Rt)
    V[1].addcmul_(ops.mask, Rt, value=-1)
    return ops.adjoint(V)


def _value_grad_at(ops, Z, Lam, rho, exact, mu, V, scratch):
    """Smooth value (a float, all-reduced) and gradient from the pre-activations Z: one message."""
    value, R = _smooth_value(ops, Z, Lam, rho, exact, mu, V, scratch)
    value, grad = _reduce_value_grad(ops, value, _smooth_grad(ops, R, rho, exact, V))
    return float(value), grad


def _reduce_value(ops, value) -> float:
    """All-reduce a value alone (a scalar message) in a distributed solve."""
    return float(value if ops.comm is None else ops.reduce_sum(value.reshape(1).clone())[0])


def _reduce_value_grad(ops, value, grad):
    """Both sums over samples in one all-reduce (a distributed solve's only per-evaluation message)."""
    if ops.comm is None:
        return value, grad
    packed = ops.reduce_sum(torch.cat([grad.reshape(-1), value.reshape(1).to(grad.dtype)]))
    return packed[-1], packed[:-1].reshape(grad.shape)


def _objective(ops, X, exact):
    """The program's own objective (no AL term), with the true loss."""
    Z = ops.pre(X[0]) - (ops.pre(X[1]) if exact else 0)
    F = ops.predict(Z)
    loss = ops.reduce_sum(ops.loss.torch_value(F, ops.Y).reshape(1))[0]
    return float(loss + ops.beta * X.norm(dim=-1).sum())


def _min_norm_subgrad(G, X, beta):
    """Norm of the minimum-norm subgradient of smooth + beta * sum ||x_i|| (over all groups)."""
    norms = X.norm(dim=-1, keepdim=True)
    active = norms > 0
    sub_active = G + beta * X / norms.clamp_min(1e-300)
    sub_zero = (G.norm(dim=-1, keepdim=True) - beta).clamp_min(0)
    return float(torch.where(active, sub_active.norm(dim=-1, keepdim=True), sub_zero).norm())


def solve_torch(
    problem,
    *,
    method: str = "auto",
    device: str = "cpu",
    dtype=torch.float64,
    max_iter: int = 20_000,
    tol: float = 1e-6,
    feas_tol: float = 1e-7,
    max_outer: int = 60,
    rho: float | None = None,
    rho_factor: float = 1.0,
    rho_growth: float = 2.0,
    inner_tol0: float = 1e-3,
    rel_change: float | None = None,
    warm_start=None,
    hinge_mu_min: float = 1e-7,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    resume: bool = False,
    progress: bool = False,
    verbose: bool = False,
    callback=None,
    finish_dtype="auto",
    memory_limit: int | None = 64 * 2**20,
    projection: str = "auto",
):
    """Solve ``problem`` in torch: FISTA (gated); ADMM or augmented Lagrangian + FISTA (exact).

    Parameters
    ----------
    problem : ConvexBNProblem
    method : {"auto", "fista", "admm", "al"}
        Exact program only. ``"fista"`` is :func:`convexbn.solvers.torch_fista.solve_fista`: accelerated
        proximal gradient whose prox is the exact group soft-threshold of the cone projection (every
        iterate feasible; stops on a certified duality gap; smooth losses). ``"admm"`` is
        :func:`convexbn.solvers.torch_admm.solve_admm` (an n x n Cholesky factor; handles the hinge
        loss without smoothing); ``"al"`` is the augmented Lagrangian with FISTA inner solves
        (matrix-free). ``"auto"`` picks ``"fista"`` for smooth losses when ``k <= FISTA_MAX_DIM``
        (128), else ADMM when ``n <= 5000``, else AL. The gated relaxation always uses plain FISTA.
    device : str
        ``"cpu"`` or ``"cuda"`` (a ``ValueError`` if CUDA is asked for and absent).
    dtype : torch.dtype or str
        ``torch.float64`` (default) or ``torch.float32`` (faster where the products dominate, as on a
        GPU; about 1e-5 relative accuracy; ``"fista"`` finishes in ``finish_dtype``).
    max_iter : int
        Budget of FISTA iterations over all phases.
    tol : float
        Stopping. ``"fista"`` (exact program): the certified relative duality gap is at most ``tol``.
        Otherwise: the norm of the minimum-norm subgradient below ``tol`` times the gradient norm at the
        start of the solve (ADMM: the relative primal and dual residuals).
    feas_tol : float
        Exact program: stop once the relative cone violation (see
        :func:`convexbn.problem.cone_violation`) is below this and the inner problem converged.
    max_outer : int
        Maximum augmented-Lagrangian rounds.
    rho : float, optional
        Initial AL penalty; default: ``rho_factor`` times the data term's Lipschitz estimate.
    rho_factor : float
        The default initial penalty in units of that estimate (1: the AL term does not worsen the
        conditioning). At MNIST-like sizes 10 reached the cone constraints much sooner (docs/solvers.md,
        "The augmented Lagrangian at large k"; ``benchmarks/bench_scale.py --rho-factor``).
    rho_growth : float
        Factor applied to ``rho`` when an AL round fails to halve the violation.
    inner_tol0 : float
        Inner tolerance of the first AL round; round ``j`` uses ``max(tol, inner_tol0 * 0.2**j)``
        (inexact early rounds, exact last ones).
    rel_change : float, optional
        ``"al"`` and the gated relaxation: FISTA runs also stop when their best objective improved by at
        most ``rel_change`` (relative) over the last 5 iterations. Default: 10 machine epsilons of
        ``dtype``, a guard against stalling at the dtype's rounding level, where the subgradient rule
        cannot be met (float32 on large problems).
    warm_start : ConvexBNSolution, dict or tuple (W_pos, W_neg), optional
        Start from these variables (the gated phase is skipped for the exact program). A solution (or
        its dict ``{"W_pos", "W_neg", "info"}``) from a previous ADMM solve on the same patterns also
        restores ADMM's scaled duals and penalty (``info["admm_state"]``): on a path over ``beta`` this is
        what makes the warm start pay off.
    hinge_mu_min : float
        Final smoothing of the hinge loss.
    checkpoint : path, optional
        Save the solver state there every ``checkpoint_every`` iterations (atomically: temp file + rename).
    resume : bool
        Continue from ``checkpoint`` if it exists; the final result equals an uninterrupted run's.
    progress : bool
        Show a tqdm progress bar over iterations.
    verbose : bool
        Print one line per AL round.
    finish_dtype : "auto", "float64" or None
        ``"fista"`` in float32 only (mixed precision): once the float32 gap stalls above ``tol`` (it is
        below ``10 sqrt(eps_float32)`` = 3.5e-3 while ``tol < sqrt(eps_float32)`` = 3.5e-4, which
        float32 cannot certify; or it did not halve in 10 checks), the iterations go on in float64 from
        there. ``"auto"`` (default) and
        ``"float64"`` do this; None keeps float32 to the end (a ``tol`` below about 1e-3 may then not
        be reached before ``max_iter``). The solver name reads ``float32+float64`` when it switched,
        and ``info["finish_at"]`` is the iteration.
    memory_limit : int or None
        ``"fista"`` only: bytes for the temporaries of the products and the projections, which then run
        in blocks of samples and of groups (default 64 MiB, measured fastest of 16 MiB to 1 GiB on 2 CPU
        cores at n = 20000, P = 1000; None: one block each). The state the method keeps (the basis, the
        mask, the iterates, the kept factors) is not counted.
    projection : {"auto", "torch", "numba"}
        ``"fista"`` only: the cone projections' implementation
        (:func:`convexbn.solvers.cone_projection.project_cones`). ``"auto"`` takes the compiled numba
        kernel on the CPU when numba is installed (``pip install convexbn[numba]``; several times faster
        there, docs/solvers.md), else the batched torch one (the GPU path).
    callback : callable, optional
        ``callback(n_iter, W_pos, W_neg)`` with numpy copies of the current point, every 10 iterations
        (ADMM: at every convergence check); returning True stops the solve there with status
        ``"optimal_inaccurate"``. For objective curves and custom stopping rules.

    Returns
    -------
    dict
        The raw result consumed by :meth:`ConvexBNProblem.solve`.
    """
    dtype = check_device_dtype(device, dtype)
    check_positive_int(max_iter, "max_iter")
    check_positive(tol, "tol")
    check_positive(feas_tol, "feas_tol")
    if dtype == torch.float32 and problem.Y.size and float(np.abs(problem.Y).max()) > 1e15:
        raise ValueError(
            f"targets up to {float(np.abs(problem.Y).max()):.3g} overflow float32 arithmetic (their squares "
            "exceed its range); use dtype=float64 or rescale the targets"
        )
    real = isinstance(rho_factor, numbers.Real) and not isinstance(rho_factor, bool)
    if not (real and math.isfinite(rho_factor) and rho_factor > 0):
        raise ValueError(f"rho_factor must be a positive finite number, got {rho_factor!r}")
    if method not in ("auto", "fista", "admm", "al"):
        raise ValueError(f"unknown torch method {method!r}; expected 'auto', 'fista', 'admm' or 'al'")
    if method == "auto":
        if problem.loss.smooth and problem.dim <= FISTA_MAX_DIM:
            method = "fista"
        else:
            method = "admm" if problem.n_samples <= 5000 else "al"
    if getattr(problem, "communicator", None) is not None and method != "al":
        raise ValueError(
            f"a distributed (row-sharded) solve runs method='al' only (its steps are all-reduce friendly); "
            f"got method={method!r}"
        )
    if problem.formulation == "exact" and method == "fista":
        from .torch_fista import solve_fista

        return solve_fista(
            problem, device=device, dtype=dtype, max_iter=max_iter, tol=tol, warm_start=warm_start,
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, progress=progress,
            verbose=verbose, callback=callback, finish_dtype=finish_dtype, memory_limit=memory_limit,
            projection=projection,
        )  # fmt: skip
    if problem.formulation == "exact" and method == "admm":
        from .torch_admm import solve_admm

        return solve_admm(
            problem, device=device, dtype=dtype, max_iter=max_iter, tol=tol, feas_tol=feas_tol,
            warm_start=warm_start, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
            resume=resume, progress=progress, verbose=verbose, callback=callback,
        )  # fmt: skip
    ops = _Operators(problem, torch.device(device), dtype)
    if rel_change is None:
        rel_change = 10 * torch.finfo(dtype).eps
    exact = problem.formulation == "exact"
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    shape = (2 if exact else 1, C, P, k)
    hinge = problem.loss.name == "hinge"

    # hashing the data costs a pass over it: only when there is a checkpoint to write or check
    fingerprint = problem_fingerprint(problem, "al", dtype) if checkpoint is not None else None
    state = None
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        blocks = (None, C, P, k)  # 1 block in the gated phase (and for the gated program), else 2
        spec = StateSpec(
            tensors={"X": (blocks, "float"), "X_prev": (blocks, "float"), "Lam": ((2, C, ops.n, P), "float")},
            counters=("outer", "inner", "total"),
            positive=("rho", "L", "t"),
            nonnegative=("mu",),
            optional=() if exact else ("Lam",),
        )
        loaded = load_checkpoint(checkpoint, fingerprint, ops.device, spec)
        phase = loaded.get("phase")
        if phase not in ("gated", "main"):
            raise CheckpointError(f"checkpoint {os.fspath(checkpoint)!r}: phase is {phase!r}")
        n_blocks = 2 if exact and phase == "main" else 1
        if loaded["X"].shape[0] != n_blocks or loaded["X_prev"].shape != loaded["X"].shape:
            raise CheckpointError(
                f"checkpoint {os.fspath(checkpoint)!r}: {loaded['X'].shape[0]} blocks in phase {phase!r}"
            )
        state = TorchSolverState(**loaded)
    if state is None:
        X0 = torch.zeros(shape, device=ops.device, dtype=dtype)
        phase = "gated" if exact else "main"
        if warm_start is not None:
            Wp, Wn = warm_start_arrays(warm_start)
            X0[0] = torch.as_tensor(np.asarray(Wp), dtype=dtype)
            if exact:
                X0[1] = torch.as_tensor(np.asarray(Wn), dtype=dtype)
            phase = "main"
        L0 = _lipschitz_estimate(ops, shape, exact)
        state = TorchSolverState(
            X=X0,
            X_prev=X0.clone(),
            Lam=torch.zeros((2, C, ops.n, P), device=ops.device, dtype=dtype) if exact else None,
            rho=float(rho) if rho is not None else rho_factor * L0,
            L=L0,
            t=1.0,
            phase=phase,
            outer=0,
            inner=0,
            total=0,
            mu=1e-2 if hinge else 0.0,
            prev_obj=math.inf,
            prev_violation=math.inf,
            history=[],
            g_ref=None,
        )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, initial=state.total, desc="convexbn torch", leave=False)

    def save():
        if checkpoint is not None:
            save_checkpoint(state.to_dict(), checkpoint, fingerprint)

    def report():
        """Call the user's callback with the current point; True asks to stop. In a distributed solve
        the callback runs on rank 0 only, and its answer is broadcast so that every process stops."""
        if callback is None:
            return False
        stop = False
        if ops.comm is None or ops.comm.rank == 0:
            X = state.X.detach().to("cpu", torch.float64).numpy()
            Xn = np.zeros_like(X[0]) if state.phase == "gated" or not exact else X[1]
            stop = bool(callback(state.total, X[0], Xn))
        return stop if ops.comm is None else ops.comm.broadcast_flag(stop)

    status = "optimal"
    while True:
        if state.phase == "gated":
            _fista_run(ops, state, exact=False, tol=tol, max_iter=max_iter, bar=bar, save=save,
                       every=checkpoint_every, report=report, rel_change=rel_change)  # fmt: skip
            if state.total >= max_iter or state.stopped:
                status = "optimal_inaccurate"
                break
            # split the gated groups into ReLU groups of the right sign
            G = state.X[0]
            S = torch.sign(ops.reduce_sum((ops.mask[None] * ops.pre(G)).sum(1, keepdim=True)).transpose(1, 2))
            S = torch.where(S == 0, torch.ones_like(S), S)
            X = torch.zeros(shape, device=ops.device, dtype=dtype)
            X[0] = G * (S > 0)
            X[1] = -G * (S < 0)
            state.X, state.X_prev, state.t, state.phase, state.inner = X, X.clone(), 1.0, "main", 0
            # a new problem: its restart test must not compare against the gated objective
            state.prev_obj, state.obj_check = math.inf, math.inf
            state.history.append(("gated", state.total, _objective(ops, state.X[:1], False)))
            save()
            continue
        inner_tol = max(tol, inner_tol0 * 0.2**state.outer) if exact else tol
        converged = _fista_run(ops, state, exact=exact, tol=inner_tol, max_iter=max_iter, bar=bar, save=save,
                               every=checkpoint_every, report=report, rel_change=rel_change)  # fmt: skip
        converged = converged and inner_tol <= tol
        if state.total >= max_iter or state.stopped:
            status = "optimal_inaccurate"
            break
        if hinge and state.mu > hinge_mu_min:
            state.mu = max(state.mu / 10, hinge_mu_min)
            state.t, state.inner, state.prev_obj, state.obj_check = 1.0, 0, math.inf, math.inf
            continue
        if not exact:
            break
        violation = cone_violation(ops.signs, ops.pre, state.X, ops.reduce_max)
        state.history.append(("al", state.total, violation))
        if verbose:
            print(f"AL round {state.outer}: iters {state.total}, violation {violation:.2e}, "
                  f"rho {state.rho:.3g}, objective {_objective(ops, state.X, True):.10g}")  # fmt: skip
        if violation <= feas_tol and converged:
            break
        if state.outer >= max_outer:
            status = "optimal_inaccurate"
            break
        Zs = torch.stack([ops.pre(state.X[0]), ops.pre(state.X[1])])
        state.Lam = (state.Lam - state.rho * ops.signs * Zs).clamp_min(0)
        if violation > 0.5 * state.prev_violation:
            state.rho *= rho_growth
        state.prev_violation = violation
        state.outer += 1
        state.t, state.inner, state.prev_obj, state.obj_check = 1.0, 0, math.inf, math.inf
        save()
    if status != "optimal":
        save()  # the exact point where the budget ran out, so that a resume continues from it
    if bar is not None:
        bar.close()
    if state.phase == "gated":  # stopped inside the gated warm start: report it as the exact start
        state.X = torch.cat([state.X, torch.zeros_like(state.X)])
    X = state.X.detach().to("cpu", torch.float64).numpy()
    if not np.all(np.isfinite(X)):
        raise SolverError("the torch solver diverged (non-finite iterates)")
    W_pos = X[0]
    W_neg = X[1] if exact else np.zeros_like(W_pos)
    return {
        "W_pos": W_pos,
        "W_neg": W_neg,
        "status": status,
        "solver": f"torch:{ops.device.type}:{str(dtype).replace('torch.', '')}",
        "n_iter": state.total,
        "info": {
            "al_rounds": state.outer,
            "rho": state.rho,
            "history": state.history,
            "lipschitz": state.L,
            **({} if ops.comm is None else {"communication": ops.comm.stats()}),
        },
    }


def _lipschitz_estimate(ops, shape, exact, n_power=20):
    """Power iteration for ||A||^2 of the data-fit map (times the loss curvature bound, 1 here)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    X = torch.randn(shape[1:], generator=g, dtype=ops.dtype).to(ops.device)
    est = 1.0
    for _ in range(n_power):
        X = X / X.norm()
        F = ops.predict(ops.pre(X))
        X = ops.reduce_sum(ops.adjoint(ops.mask * F.T[:, :, None]))
        est = float(X.norm())
    curvature = 0.25 if ops.loss.name == "logistic" else 1.0
    return max(est * curvature * (2 if exact else 1), 1e-12)


def _fista_run(
    ops, state, *, exact, tol, max_iter, bar, save, every, report=None, check_every=5, rel_change=0.0
):
    """FISTA on the current (AL-augmented) problem, continuing from ``state``. True if converged.

    Converged: the minimum-norm subgradient is below ``tol`` times the reference gradient, or the best
    objective improved by at most ``rel_change`` (relative) over the last ``check_every`` iterations.

    Per iteration: one gradient at the extrapolated point (two adjoint products; its pre-activations
    are the same extrapolation of the last two iterates' ones) and one forward product per
    backtracking trial. The stopping rule's gradient at the new point (two more adjoint products) is
    formed every ``check_every`` iterations only.
    """
    beta = ops.beta
    # the gated warm-start phase of the exact program works on the first block only
    X, X_prev = (state.X[:1], state.X_prev[:1]) if state.phase == "gated" else (state.X, state.X_prev)
    use_exact = exact
    Lam, rho, mu = state.Lam, state.rho, max(state.mu, 1e-300)
    L, t = state.L, state.t
    nonsmooth = lambda Z: beta * float(Z.norm(dim=-1).sum())  # noqa: E731
    obj = state.prev_obj
    slack = 10 * torch.finfo(ops.dtype).eps  # rounding allowance of the sufficient-decrease test
    converged = False
    # Four (B, C, n, P) buffers for the whole run; every elementwise step writes into one of them (a fresh
    # array of this size costs more in page faults than its arithmetic). Z and Zo hold the pre-activations
    # of the last two iterates; once the extrapolated ones are formed in Zy, Zo is free and receives the
    # trial point's (the two then swap roles on acceptance); V holds the AL residual and then, in place,
    # the adjoint's input. Z is linear in X, so fresh products at every (re)start make a resumed solve take
    # the very same steps.
    buffers = [torch.empty((X.shape[0], X.shape[1], ops.n, X.shape[2]), device=ops.device, dtype=ops.dtype)
               for _ in range(4)]  # fmt: skip
    Z, Zo, Zy_buf, V = buffers
    _pre_into(ops, X, Z)
    if torch.equal(X, X_prev):
        Zo.copy_(Z)
    else:
        _pre_into(ops, X_prev, Zo)
    # the best objective at the last check (inf at the start of a run: a new round or phase)
    obj_check = math.inf if state.obj_check is None else state.obj_check
    while state.total < max_iter:
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = (t - 1) / t_next
        Yx = X + momentum * (X - X_prev)
        # Z + momentum (Z - Zo), the extrapolation of the last two iterates' pre-activations
        Zy = torch.lerp(Zo, Z, 1 + momentum, out=Zy_buf) if momentum else Z
        fy, gy = _value_grad_at(ops, Zy, Lam, rho, use_exact, mu, V, Zo)
        if state.g_ref is None:  # scale of the stopping rule: the gradient at the start of the solve
            state.g_ref = max(float(gy.norm()), 1e-300)
        extrapolated = bool(momentum)
        while True:  # backtracking on L
            Xn = _group_shrink(Yx - gy / L, beta / L)
            D = Xn - Yx
            Zn = _pre_into(ops, Xn, Zo)
            fx, Rn = _smooth_value(ops, Zn, Lam, rho, use_exact, mu, V, Zy_buf)
            fx = _reduce_value(ops, fx)
            if fx <= fy + float((gy * D).sum()) + 0.5 * L * float(D.square().sum()) + slack * abs(fy):
                break
            if extrapolated:
                # the extrapolated pre-activations carry their own rounding, which a very curved loss
                # (the smoothed hinge at small mu) can mistake for a too-small L: recompute them once
                fy, gy = _value_grad_at(ops, _pre_into(ops, Yx, Zy_buf), Lam, rho, use_exact, mu, V, Zo)
                extrapolated = False
                continue
            L *= 2.0
        new_obj = fx + nonsmooth(Xn)
        if new_obj > obj:  # adaptive restart: drop the momentum
            t_next = 1.0
        X_prev, X, Zo, Z = X, Xn, Z, Zn
        t = t_next
        L *= 0.95  # let the step grow back
        state.total += 1
        state.inner += 1
        if bar is not None:
            bar.update(1)
        obj = min(obj, new_obj)
        if state.inner % check_every == 0:
            # stop on the minimum-norm subgradient of the (AL-augmented) objective at the new point
            gx = ops.reduce_sum(_smooth_grad(ops, Rn, rho, use_exact, V))  # a fresh tensor: summed in place
            converged = _min_norm_subgrad(gx, X, beta) <= tol * state.g_ref
            stalled = math.isfinite(obj_check) and obj_check - obj <= rel_change * abs(obj)
            converged = converged or stalled
            obj_check = state.obj_check = obj
        del Rn
        state.X, state.X_prev, state.L, state.t, state.prev_obj = X, X_prev, L, t, obj
        if every and state.total % every == 0:
            save()
        if report is not None and state.total % 10 == 0 and report():
            state.stopped = True
            break
        if converged:
            break
    return converged
