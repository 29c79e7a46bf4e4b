"""Data-parallel solves of one large program over row shards, with ``torch.distributed``.

Each process (rank) holds a block of rows of the data: its rows of ``X``, hence of ``U'``, of the
pattern mask and of the targets. Every sum over samples is an all-reduce, so all ranks take the same
steps on the same (replicated, small) variables ``W_pos``, ``W_neg`` of shape (C, P, k):

1. :func:`distributed_bn_basis`: the column means, scales and norms by all-reduce, and the SVD of the
   centered data by TSQR (each rank's ``R`` factor of size d x d is all-gathered, the SVD of the stacked
   factors gives ``S`` and ``V``, each rank forms its own rows of ``U``); the data is never gathered.
2. :func:`distributed_sample_arrangements`: rank 0 draws the Gaussian generators and broadcasts them,
   every rank forms the patterns on its rows; duplicates and all-zero patterns are found from all-gathered
   per-rank hashes of each pattern, keeping the same first occurrences as
   :func:`convexbn.sample_arrangements`.
3. :class:`DistributedConvexBNProblem` and its ``solve``: the augmented-Lagrangian torch solver
   (``method="al"``, :mod:`convexbn.solvers.torch`) with, per iteration, one all-reduce of the
   gradient at the extrapolated point (``2 C P k + 1`` floats), a scalar one per backtracking trial, the
   stopping rule's gradient every 5th iteration, and one scalar max-reduce per AL round.
   Stopping rules, pruning, the reported objective and the recovered network are those of the
   single-process solve; checkpoints are written per rank (``PATH.rank{r}-of-{w}``).

Memory per rank (floats of the working dtype, ``n_r`` rows on the rank): ``n_r k`` (basis) + ``3 n_r P``
(mask and both signs) + ``2 C n_r P`` (multipliers) + ``8 C n_r P`` (the FISTA run's four buffers) +
``O(C P k + d^2 w)`` replicated, i.e. roughly ``(3 + 10 C) n_r P + n_r k`` floats.

Launch with ``torchrun --nproc_per_node=N script.py`` (Gloo on CPU, NCCL on GPUs); the script calls
``torch.distributed.init_process_group`` and passes its rows (e.g. ``X[shard_rows(n, rank, N)]``).
See ``examples/distributed_solve.py`` and ``docs/scaling.md``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.distributed as dist
from sklearn.utils import check_random_state
from sklearn.utils.extmath import svd_flip

from ._validation import check_data, check_positive_int
from .arrangements import Arrangements
from .basis import (
    BNBasis,
    check_rank_options,
    column_rms,
    feature_scale,
    scaled_magnitude,
    truncated_basis,
)
from .distributed_launch import launch_local
from .losses import get_loss
from .problem import ConvexBNProblem, ConvexBNSolution
from .recovery import recover_network

__all__ = [
    "Communicator",
    "DistributedConvexBNProblem",
    "distributed_bn_basis",
    "distributed_sample_arrangements",
    "fit_distributed",
    "launch_local",
    "shard_rows",
]


def shard_rows(n_samples: int, rank: int, world_size: int) -> slice:
    """Rows ``[start, stop)`` of rank ``rank`` when ``n_samples`` rows are split into ``world_size``
    contiguous blocks of sizes differing by at most one (``numpy.array_split``'s rule)."""
    base, extra = divmod(int(n_samples), int(world_size))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class Communicator:
    """The collective operations a distributed solve uses, with a count of what was sent.

    Parameters
    ----------
    group : ProcessGroup, optional
        Default: the world group of ``torch.distributed.init_process_group``.
    device : str or torch.device, optional
        Where the small messages built from NumPy arrays live (``"cuda"`` under NCCL). Default: CUDA if
        the backend is NCCL, else CPU.

    Raises
    ------
    RuntimeError
        If ``torch.distributed`` has not been initialized.
    """

    def __init__(self, group=None, device=None):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "torch.distributed is not initialized: launch with torchrun (or torch.multiprocessing) "
                "and call torch.distributed.init_process_group('gloo') first"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        if device is None:
            device = "cuda" if dist.get_backend(group) == "nccl" else "cpu"
        self.device = torch.device(device)
        self.n_allreduce = 0
        self.n_bytes = 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` with a sum, in place; returns it."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        self.n_allreduce += 1
        self.n_bytes += tensor.numel() * tensor.element_size()
        return tensor

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        self.n_allreduce += 1
        self.n_bytes += 8
        return float(t.item())

    def sum_array(self, a: np.ndarray) -> np.ndarray:
        """Elementwise sum of a float64 array over the ranks."""
        t = torch.as_tensor(np.array(a, dtype=np.float64), device=self.device)
        return self.sum_(t).cpu().numpy()

    def max_array(self, a: np.ndarray) -> np.ndarray:
        """Elementwise maximum of a float64 array over the ranks."""
        t = torch.as_tensor(np.array(a, dtype=np.float64), device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        self.n_allreduce += 1
        self.n_bytes += t.numel() * t.element_size()
        return t.cpu().numpy()

    def all_gather_array(self, a: np.ndarray) -> np.ndarray:
        """Stack every rank's array (all of one shape and dtype) along a new first axis."""
        t = torch.as_tensor(np.ascontiguousarray(a), device=self.device)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(out, t, group=self.group)
        return torch.stack(out).cpu().numpy()

    def broadcast_array(self, a: np.ndarray | None, shape, dtype=np.float64) -> np.ndarray:
        """Rank 0's array ``a`` on every rank (the others pass ``None``)."""
        if self.rank == 0:
            t = torch.as_tensor(np.ascontiguousarray(a, dtype=dtype), device=self.device)
        else:
            t = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype=dtype)).dtype, device=self.device)
        dist.broadcast(t, src=dist.get_global_rank(self.group, 0) if self.group else 0, group=self.group)
        return t.cpu().numpy()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        return bool(self.broadcast_array(np.array([float(flag)]) if self.rank == 0 else None, (1,))[0])

    def agree(self, func, *args, **kwargs):
        """Run ``func`` on every rank; if it raises on any rank, raise on every rank (no rank is left
        waiting in a collective). The error names the first failing rank and keeps its type and message."""
        try:
            result, error = func(*args, **kwargs), None
        except Exception as exc:  # collected and re-raised on every rank below
            result, error = None, exc
        errors = [None] * self.world_size
        dist.all_gather_object(errors, None if error is None else (type(error), str(error)), group=self.group)
        for rank, item in enumerate(errors):
            if item is not None:
                if error is not None and rank == self.rank:
                    raise error
                kind, message = item
                kind = kind if issubclass(kind, (ValueError, TypeError, RuntimeError)) else RuntimeError
                raise kind(f"rank {rank}: {message}")
        return result

    def stats(self) -> dict:
        """Messages sent so far by this rank: ``{"world_size", "allreduce_calls", "allreduce_bytes"}``."""
        return {
            "world_size": self.world_size,
            "allreduce_calls": self.n_allreduce,
            "allreduce_bytes": self.n_bytes,
        }


def distributed_bn_basis(
    X_local, *, rank_tol: float | None = None, scale_features: bool = True, group=None
) -> BNBasis:
    """The BN basis (docs/math.md section 2) of data split by rows over the ranks, without gathering it.

    Parameters
    ----------
    X_local : array-like of shape (n_r, d)
        This rank's rows (at least one; every rank the same ``d``). The global data is the ranks' rows
        in rank order.
    rank_tol, scale_features
        As in :func:`convexbn.bn_basis`, applied to the global data (the threshold uses the global
        ``max |X_ij|`` and ``||X diag(scale)^-1||_F``).
    group : ProcessGroup, optional

    Returns
    -------
    BNBasis
        ``U`` holds this rank's rows of the global ``U`` (shape (n_r, r)); ``S``, ``V``, ``mean``,
        ``scale`` and ``n_samples`` are global and equal on every rank. Equal to :func:`convexbn.bn_basis`
        of the stacked data up to rounding (both follow the ``svd_flip`` sign convention).

    Notes
    -----
    TSQR: ``P X = blockdiag(Q_r) [R_0; ...; R_{w-1}]`` with each rank's thin QR ``X_c,r = Q_r R_r``; the
    SVD ``[R_0; ...] = U_R S V^T`` (every rank computes it from the all-gathered ``w d x d`` stack, so
    all get the same bits) gives ``U_r = Q_r U_R[block r]``. Communication: ``w d^2`` floats plus a few
    length-``d`` reductions; no ``d x d`` Gram matrix, so the conditioning is that of ``X`` itself.
    """
    comm = Communicator(group)
    X = comm.agree(check_data, X_local, min_samples=1)
    n_r, d = X.shape
    dims = comm.all_gather_array(np.array([n_r, d], dtype=np.int64))
    if np.any(dims[:, 1] != d):
        raise ValueError(f"every rank must hold the same number of features; got {dims[:, 1].tolist()}")
    n = int(dims[:, 0].sum())
    rank_tol, default_tol = comm.agree(check_rank_options, rank_tol, scale_features, n, d)
    mean = comm.sum_array(X.sum(axis=0)) / n
    Xc = X - mean
    spread = comm.max_array(np.abs(X).max(axis=0))
    std = column_rms(lambda unit: comm.sum_array(((Xc / unit) ** 2).sum(axis=0)), spread, n)
    scale, constant = feature_scale(std, spread, scale_features)
    Xc = Xc / scale
    Xc[:, constant] = 0.0
    Q, R = np.linalg.qr(Xc)  # (n_r, m), (m, d) with m = min(n_r, d)
    m = R.shape[0]
    R_pad = np.zeros((d, d))
    R_pad[:m] = R
    stacked = comm.all_gather_array(R_pad).reshape(comm.world_size * d, d)
    U_R, S, Vt = np.linalg.svd(stacked, full_matrices=False)
    U_R, Vt = svd_flip(U_R, Vt, u_based_decision=False)
    S, Vt = S[: min(n, d)], Vt[: min(n, d)]  # the centered data has min(n, d) singular values
    U = Q @ U_R[comm.rank * d : comm.rank * d + m, : S.size]
    abs_max = scaled_magnitude(spread, scale, constant)
    scaled_norm = float(np.sqrt(comm.sum_array(np.array([np.sum((X / scale) ** 2)]))[0]))
    return comm.agree(
        truncated_basis, U, S, Vt, mean=mean, scale=scale, n=n, rank_tol=rank_tol, default_tol=default_tol,
        abs_max=abs_max, scaled_norm=scaled_norm,
    )  # fmt: skip


def _pattern_keys(mask: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each column of this rank's (n_r, P) boolean mask."""
    packed = np.packbits(mask, axis=0)
    keys = np.empty(mask.shape[1], dtype=np.int64)
    for i in range(mask.shape[1]):
        digest = hashlib.blake2b(packed[:, i].tobytes(), digest_size=8).digest()
        keys[i] = np.frombuffer(digest, dtype=np.int64)[0]
    return keys


def _unique_patterns_sharded(comm: Communicator, mask: np.ndarray, generators: np.ndarray):
    """:func:`convexbn.arrangements._unique_patterns` over row shards: a pattern is its column on every
    rank, keyed by the tuple of the ranks' hashes (a collision needs two distinct 64-bit hashes to
    agree, about ``P^2 / 2^64``)."""
    nonzero = comm.max_array(mask.any(axis=0).astype(np.float64)) > 0
    keys = comm.all_gather_array(_pattern_keys(mask)).T  # (P, world)
    idx = np.flatnonzero(nonzero)
    _, first = np.unique(keys[idx], axis=0, return_index=True)
    keep = idx[np.sort(first)]
    return np.ascontiguousarray(mask[:, keep]), generators[keep]


def distributed_sample_arrangements(
    basis: BNBasis, n_arrangements: int = 200, *, random_state=None, group=None
) -> Arrangements:
    """:func:`convexbn.sample_arrangements` on a sharded basis: the same patterns, each rank's rows.

    Rank 0 draws the generators ``g ~ N(0, I)`` from ``random_state`` and broadcasts them, so the ranks
    agree whatever their seeds; with the same seed the result equals the single-process sample of the
    stacked data (same patterns, same order).

    Returns
    -------
    Arrangements
        ``mask`` of shape (n_r, P): this rank's rows of the patterns.
    """
    comm = Communicator(group)
    n_arrangements = check_positive_int(n_arrangements, "n_arrangements")
    rng = check_random_state(random_state) if comm.rank == 0 else None
    shape = (n_arrangements, basis.dim)
    for _ in range(1000):  # as in sample_arrangements: redraw while every pattern is all-zero
        G = comm.broadcast_array(rng.standard_normal(shape) if comm.rank == 0 else None, shape)
        mask, G = _unique_patterns_sharded(comm, basis.Uprime @ G.T >= 0, G)
        if G.shape[0]:
            break
    return Arrangements(mask=mask, generators=G, exact=False)


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_r, n_classes) one-hot rows of integer labels ``0 .. n_classes - 1``."""
    if (
        labels.dtype.kind not in "biuf"
        or not np.all(np.isfinite(labels))
        or np.any(labels != np.round(labels))
        or np.any(labels < 0)
    ):
        raise ValueError("cross_entropy needs integer class labels 0..C-1 or a one-hot matrix")
    Y = np.zeros((labels.shape[0], max(n_classes, 1)))
    Y[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1.0
    return Y


class DistributedConvexBNProblem(ConvexBNProblem):
    """Program (4) over row shards: this rank's rows of ``U'``, of the patterns and of the targets.

    Parameters
    ----------
    basis : BNBasis
        From :func:`distributed_bn_basis`.
    arrangements : Arrangements
        From :func:`distributed_sample_arrangements` (or any mask of this rank's rows, the same
        patterns on every rank).
    y_local : array-like of shape (n_r,) or (n_r, C)
        This rank's targets, encoded as for :class:`~convexbn.ConvexBNProblem`. For
        ``"cross_entropy"`` with integer labels the number of classes is the global one.
    beta, loss, formulation
        As in :class:`~convexbn.ConvexBNProblem`, equal on every rank.
    group : ProcessGroup, optional

    Notes
    -----
    :meth:`objective` and :meth:`constraint_violation` are global (all-reduced); :meth:`predict` gives
    this rank's rows. ``solve`` runs the torch augmented-Lagrangian solver; the certificate needs every
    row and is not available on a shard.
    """

    def __init__(self, basis, arrangements, y_local, beta, loss="squared", formulation="exact", group=None):
        comm = Communicator(group)
        self.communicator = comm
        loss = get_loss(loss)
        y_local = np.asarray(y_local)
        if loss.name == "cross_entropy" and y_local.ndim == 1:
            # every rank one-hot encodes to the global number of classes (a shard may miss some)
            top = comm.max(float(np.nanmax(y_local)) if y_local.size and y_local.dtype.kind in "biuf" else 0)
            y_local = comm.agree(_one_hot, y_local, int(top) + 1)
        comm.agree(super().__init__, basis, arrangements, y_local, beta, loss, formulation)
        outputs = comm.all_gather_array(np.array([self.n_outputs, self.n_patterns], dtype=np.int64))
        if np.any(outputs != outputs[0]):
            raise ValueError(
                f"the ranks disagree on (outputs, patterns): {outputs.tolist()}; targets must be encoded "
                "alike and the patterns must be the same on every rank"
            )

    @property
    def n_local(self) -> int:
        """Rows held by this rank."""
        return int(self.Uprime.shape[0])

    def objective(self, W_pos, W_neg=None, mask=None) -> float:
        """Value of (4) over all ranks' rows (the loss is all-reduced; the penalty is replicated)."""
        F = self.predict(W_pos, W_neg, mask)
        loss = self.communicator.sum_array(np.array([self.loss.value(F, self.Y)]))[0]
        return float(loss) + self.penalty(W_pos, W_neg)

    def constraint_violation(self, W_pos, W_neg, mask=None) -> float:
        """Largest relative cone violation over all ranks' rows."""
        return self.communicator.max(super().constraint_violation(W_pos, W_neg, mask))

    def solve(self, solver: str = "torch", *, prune_tol: float = 1e-7, checkpoint=None, **options):
        """Solve with the torch augmented-Lagrangian solver, data-parallel.

        Parameters
        ----------
        solver : {"torch"}
        prune_tol : float
            As in :meth:`ConvexBNProblem.solve` (decided on the global objective, so alike on all ranks).
        checkpoint : path, optional
            Each rank saves its state to ``f"{checkpoint}.rank{r}-of-{w}"`` (its multipliers are its own
            rows); resume with ``resume=True`` and the same number of ranks.
        **options
            Passed to :func:`convexbn.solvers.torch.solve_torch` (``method`` must be ``"al"``).

        Returns
        -------
        ConvexBNSolution
            ``W_pos``, ``W_neg``, ``objective`` and ``status`` are the same on every rank; ``predict_train``
            gives this rank's rows; ``info["communication"]`` counts the messages this rank sent.
        """
        if solver != "torch":
            raise ValueError(f"a distributed solve runs the torch solver only; got solver={solver!r}")
        method = options.pop("method", "al")
        if checkpoint is not None:
            comm = self.communicator
            checkpoint = f"{checkpoint}.rank{comm.rank}-of-{comm.world_size}"
        return super().solve("torch", prune_tol=prune_tol, method=method, checkpoint=checkpoint, **options)

    def certificate(self, solution, arrangements=None, **kw):
        raise NotImplementedError(
            "the dual certificate needs every row of U'; gather the data and use ConvexBNProblem.certificate"
        )


def fit_distributed(
    X_local,
    y_local,
    beta: float,
    *,
    n_arrangements: int = 200,
    random_state=None,
    loss: str = "squared",
    formulation: str = "exact",
    rank_tol: float | None = None,
    scale_features: bool = True,
    group=None,
    **solver_options,
) -> tuple[ConvexBNSolution, object]:
    """Basis, patterns, data-parallel solve and recovered network, from this rank's rows.

    Returns
    -------
    solution : ConvexBNSolution
        As from :meth:`DistributedConvexBNProblem.solve`.
    network : BNNetwork
        The recovered network (the same on every rank): its weights, BN statistics and output layer
        are global, so ``network.predict`` works on any data.
    """
    basis = distributed_bn_basis(X_local, rank_tol=rank_tol, scale_features=scale_features, group=group)
    arrangements = distributed_sample_arrangements(
        basis, n_arrangements, random_state=random_state, group=group
    )
    problem = DistributedConvexBNProblem(basis, arrangements, y_local, beta, loss, formulation, group=group)
    solution = problem.solve("torch", **solver_options)
    network = recover_network(solution) if formulation == "exact" else None
    return solution, network






