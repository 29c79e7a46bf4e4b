"""Newton polishing of FISTA's iterates (convexbn.solvers.torch.polish) against Clarabel, plain FISTA, the
recovered network's forward pass and autograd."""

import numpy as np
import pytest
import torch
from conftest import DATASETS, to_pm1

from convexbn import ConvexBNProblem, bn_basis, get_loss, recover_network, sample_arrangements
from convexbn.solvers.torch.fista import ExactMaps, duality_gap
from convexbn.solvers.torch.polish import polish_support
from convexbn.solvers.torch.polish_schedule import in_cones
from convexbn.solvers.torch.restricted import polish_size
from convexbn.solvers.torch.settings import FistaSettings


def _weak_problem(loss="squared", beta=0.02, P=40, n_out=None):
    X, y = DATASETS["random"]()
    if loss == "logistic":
        y = to_pm1(y)
    elif loss == "cross_entropy":
        y = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))  # three classes
    elif n_out:
        y = np.column_stack([y, np.sin(3 * X[:, 1])])
    basis = bn_basis(X)
    arr = sample_arrangements(basis, P, random_state=0)
    return X, y, ConvexBNProblem(basis, arr, y, beta=beta, loss=loss)


@pytest.mark.parametrize("loss", ["squared", "logistic", "cross_entropy"])
def test_polished_fista_certifies_the_clarabel_optimum(loss):
    X, y, problem = _weak_problem(loss)
    ref = problem.solve("clarabel")
    plain = problem.solve("torch", polish=False, tol=1e-7, max_iter=50_000)
    polished = problem.solve("torch", tol=1e-7, max_iter=50_000)
    assert polished.status == plain.status == "optimal"
    assert polished.info["polished"] >= 1 and plain.info["polished"] == 0
    assert polished.info["relative_gap"] <= 1e-7
    assert polished.objective == pytest.approx(plain.objective, rel=2e-7)
    assert polished.objective == pytest.approx(ref.objective, rel=1e-5)
    # the polished point is in the cones and its network reproduces its objective
    assert polished.constraint_violation <= 1e-12
    assert recover_network(polished).objective(X, y) == pytest.approx(polished.objective, rel=1e-9)


def _early_iterate(problem, drop_half=False):
    """FISTA's iterate after 300 iterations (optionally with every other nonzero group set to zero), its
    faces (its rows at zero: FISTA keeps them, a direct call finds them) and the maps."""
    early = problem.solve("torch", polish=False, tol=1e-12, max_iter=300)
    maps = ExactMaps(problem, torch.device("cpu"), torch.float64)
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    start = torch.stack([torch.as_tensor(early.W_pos), torch.as_tensor(early.W_neg)])
    flat = start.reshape(-1, k)
    if drop_half:
        flat[torch.where(flat.norm(dim=1) > 0)[0][::2]] = 0
    values = (maps.Up @ flat.T) * maps.pattern_signs[torch.arange(2 * C * P) % P].T
    scale = maps.Up.norm(dim=1)[:, None] * flat.norm(dim=1)[None, :]
    faces = torch.full((2 * C * P, k), -1, dtype=torch.long)
    for g in torch.where(flat.norm(dim=1) > 0)[0].tolist():
        rows = torch.where(values[:, g].abs() <= 1e-10 * scale[:, g])[0][: k - 1]
        faces[g, : len(rows)] = rows
    return maps, start, faces


def test_polish_of_an_early_iterate_is_feasible_and_no_worse():
    X, y, problem = _weak_problem(beta=0.02)
    maps, start, faces = _early_iterate(problem)
    before, _ = duality_gap(maps, start, problem.beta, faces)
    result = polish_support(maps, start, faces, problem.beta)
    assert result.objective <= before
    assert in_cones(maps, result.X)
    assert result.variables == polish_size(result.X, result.faces)
    objective, lower = duality_gap(maps, result.X, problem.beta, result.faces)
    assert objective == pytest.approx(result.objective, rel=1e-12)
    assert lower <= objective * (1 + 1e-12)
    # from an iterate this close the Newton steps find the optimum: a certified tiny gap
    ref = problem.solve("clarabel")
    assert objective == pytest.approx(ref.objective, rel=1e-5)


def test_the_polish_never_outgrows_max_vars():
    # half of an iterate's support dropped: those groups enter the polish again, and M grows
    X, y, problem = _weak_problem(beta=0.02)
    maps, start, faces = _early_iterate(problem, drop_half=True)
    before, _ = duality_gap(maps, start, problem.beta, faces)
    size = polish_size(start, faces)
    free = polish_support(maps, start, faces, problem.beta)
    assert free.peak_variables > size + 10  # uncapped, the restricted problem grows
    capped = polish_support(maps, start, faces, problem.beta, max_vars=size)
    assert capped.peak_variables <= size
    assert capped.objective < before and in_cones(maps, capped.X)
    objective, _ = duality_gap(maps, capped.X, problem.beta, capped.faces)
    assert objective == pytest.approx(capped.objective, rel=1e-12)


def test_polish_on_several_outputs_matches_plain_fista():
    X, y, problem = _weak_problem(n_out=2)
    plain = problem.solve("torch", polish=False, tol=1e-7, max_iter=50_000)
    polished = problem.solve("torch", tol=1e-7, max_iter=50_000)
    assert polished.info["relative_gap"] <= 1e-7
    assert polished.objective == pytest.approx(plain.objective, rel=2e-7)


def test_polish_is_skipped_over_its_size_and_memory_limits():
    _, _, problem = _weak_problem()
    assert problem.solve("torch", tol=1e-6).info["polished"] >= 1
    sol = problem.solve("torch", tol=1e-6, polish_max_vars=1)
    assert sol.info["polished"] == 0
    assert sol.info["relative_gap"] <= 1e-6
    # an n x M Jacobian (and temporaries) over memory_limit: n = 100 samples, M >= 1 variable, 4 x 8 bytes
    sol = problem.solve("torch", tol=1e-6, memory_limit=4 * 8 * problem.n_samples - 1)
    assert sol.info["polished"] == 0
    assert sol.info["relative_gap"] <= 1e-6


@pytest.mark.parametrize("loss", ["squared", "logistic", "cross_entropy"])
def test_torch_hessian_matches_autograd(loss):
    rng = np.random.default_rng(0)
    F = torch.as_tensor(rng.normal(size=(7, 3)))
    if loss == "cross_entropy":
        Y = torch.nn.functional.one_hot(torch.as_tensor(rng.integers(0, 3, 7)), 3).double()
    else:
        Y = torch.as_tensor(rng.choice([-1.0, 1.0], size=(7, 3)))
    lossf = get_loss(loss)
    V = torch.as_tensor(rng.normal(size=(7, 3)))
    w, q = lossf.torch_hessian(F, Y)
    ours = w * V - (0 if q is None else q * (q * V).sum(1, keepdim=True))
    _, hvp = torch.autograd.functional.hvp(lambda f: lossf.torch_value(f, Y), F, V)
    np.testing.assert_allclose(ours.numpy(), hvp.numpy(), rtol=1e-12, atol=1e-14)


def test_hinge_has_no_hessian_and_bad_polish_settings():
    with pytest.raises(NotImplementedError, match="hinge loss has no Hessian"):
        get_loss("hinge").torch_hessian(torch.zeros(2, 1), torch.ones(2, 1))
    with pytest.raises(ValueError, match="polish must be True or False"):
        FistaSettings(polish="yes")
    with pytest.raises(ValueError, match="polish_max_vars"):
        FistaSettings(polish_max_vars=0)


def test_restricted_problem_carries_the_data_hessian_of_unchanged_groups():
    from convexbn.solvers.torch.restricted import RestrictedProblem

    _, _, problem = _weak_problem(n_out=2)
    sol = problem.solve("torch", polish=False, tol=1e-4)
    maps = ExactMaps(problem, torch.device("cpu"), torch.float64)
    X = torch.stack([torch.as_tensor(sol.W_pos), torch.as_tensor(sol.W_neg)])
    k = X.shape[-1]
    flat = X.reshape(-1, k)
    support = torch.where(flat.norm(dim=1) > 0)[0]
    faces = torch.full((len(support), k), -1, dtype=torch.long)
    prob = RestrictedProblem(maps, X.shape, support, faces, problem.beta)
    u = flat[support]
    z = prob.to_z(u)
    _, F = prob.value(z)
    prob.newton_system(z, F, prob.data_gradient(F))  # computes and keeps the data Hessian
    # one group gets a face row, one leaves
    changed = torch.zeros(len(support), dtype=torch.bool)
    changed[0] = True
    prob.faces[0, 0] = 3
    keep = torch.ones(len(support), dtype=torch.bool)
    keep[1] = False
    new, _ = prob.restrict(keep, changed, u)
    fresh = (new.J.T @ new.J) * new.same_output
    scale = float(fresh.abs().max())
    np.testing.assert_allclose(new.data_hessian.numpy(), fresh.numpy(), rtol=0, atol=1e-12 * scale)
    assert len(new.support) == len(support) - 1
    # the columns of J copied from the old problem equal a fresh build on the same groups and faces
    rebuilt = RestrictedProblem(maps, X.shape, new.support, new.faces, problem.beta, new.spaces)
    assert int((new.old_col >= 0).sum()) == len(new.owner) - (k - 1)  # all but the changed group's
    atol = 1e-13 * float(rebuilt.J.abs().max())
    np.testing.assert_allclose(new.J.numpy(), rebuilt.J.numpy(), rtol=0, atol=atol)
    # and J is the data map on the null spaces: J z = the predictions of the groups u = B z
    Xz = torch.zeros_like(flat)
    Xz[new.support] = new.to_u(z_new := torch.randn(len(new.owner), dtype=torch.float64))
    np.testing.assert_allclose(new.predict(z_new).numpy(), maps.predict(Xz.reshape(X.shape)).numpy(),
                               rtol=0, atol=1e-12 * float(maps.predict(Xz.reshape(X.shape)).abs().max()))


def test_null_spaces_with_independent_and_dependent_face_rows():
    from convexbn.solvers.torch.restricted import _null_spaces

    _, _, problem = _weak_problem(n_out=1)
    maps = ExactMaps(problem, torch.device("cpu"), torch.float64)
    k = maps.Up.shape[1]
    faces = torch.full((3, k), -1, dtype=torch.long)
    faces[0, :3] = torch.tensor([4, 9, 17])  # three independent rows
    faces[1, [0, 2, 5]] = torch.tensor([4, 9, 4])  # a repeated row, slots not packed: rank 2
    patterns = torch.tensor([0, 1, 2])
    Vh, rank = _null_spaces(maps, patterns, faces)
    assert rank.tolist() == [3, 2, 0]
    for g in range(3):
        rows = faces[g][faces[g] >= 0]
        normals = maps.pattern_signs[patterns[g], rows][:, None] * maps.Up[rows]
        basis = Vh[g, int(rank[g]) :]  # (k - rank, k)
        np.testing.assert_allclose((basis @ basis.T).numpy(), np.eye(k - int(rank[g])), atol=1e-12)
        if len(rows):
            assert float((normals @ basis.T).abs().max()) <= 1e-12 * float(normals.abs().max())
