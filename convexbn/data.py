"""Loading data for the command line: scikit-learn's bundled datasets, CSV and NPZ files.

Every failure is a ``ValueError`` / ``FileNotFoundError`` naming the file, the column or the array, so the
CLI can print it as one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["BUNDLED", "Dataset", "load_dataset"]

#: scikit-learn loaders by name, and whether the target is class labels.
BUNDLED = {
    "breast_cancer": ("load_breast_cancer", True),
    "digits": ("load_digits", True),
    "wine": ("load_wine", True),
    "iris": ("load_iris", True),
    "diabetes": ("load_diabetes", False),
}


@dataclass
class Dataset:
    """Features, target and what they are.

    Attributes
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
        Class labels when ``classification``, else real values.
    feature_names : list of str
    target_name : str
    classification : bool
    source : str
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list
    target_name: str
    classification: bool
    source: str


def _is_classification(y: np.ndarray) -> bool:
    """Integer-valued targets with few distinct values (<= 20 and < n / 2) are class labels."""
    if y.dtype.kind in "USO":
        return True
    values = np.unique(y)
    return bool(np.all(values == np.round(values)) and values.size <= 20 and values.size < y.size / 2)


def load_dataset(source: str, *, target: str | None = None) -> Dataset:
    """Load a bundled dataset by name, or a ``.csv`` / ``.npz`` file.

    Parameters
    ----------
    source : str
        One of :data:`BUNDLED`, or a path. A CSV has a header row; every column but the target must be
        numeric. An NPZ holds arrays ``X`` (n, d) and ``y`` (n,) (or the array named by ``target``).
    target : str, optional
        The target column of a CSV (default: the last column) or the target array of an NPZ (default ``y``).
    """
    if source in BUNDLED:
        from sklearn import datasets

        loader, classification = BUNDLED[source]
        bunch = getattr(datasets, loader)()
        names = [str(f) for f in getattr(bunch, "feature_names", range(bunch.data.shape[1]))]
        return Dataset(bunch.data.astype(np.float64), bunch.target, names, "target", classification, source)
    if not os.path.exists(source):
        raise FileNotFoundError(
            f"no such data file {source!r} (or a bundled dataset name: {', '.join(sorted(BUNDLED))})"
        )
    lower = source.lower()
    if lower.endswith(".npz"):
        return _load_npz(source, target or "y")
    if lower.endswith(".csv"):
        return _load_csv(source, target)
    raise ValueError(f"{source!r}: unknown data format; expected a .csv or .npz file or a bundled name")


def _load_npz(path: str, target: str) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ValueError(f"{path!r} is not a readable .npz file: {exc}") from None
    for key in ("X", target):
        if key not in contents:
            raise ValueError(f"{path!r} has no array {key!r}; it holds {sorted(contents)}")
    X, y = contents["X"], contents[target]
    if X.ndim != 2:
        raise ValueError(f"{path!r}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{path!r}: X must be numeric, got dtype {X.dtype}")
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{path!r}: {target} must have shape ({X.shape[0]},), got {y.shape}")
    names = [f"x{j}" for j in range(X.shape[1])]
    return Dataset(X.astype(np.float64), y, names, target, _is_classification(y), path)


def _load_csv(path: str, target: str | None) -> Dataset:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ValueError(f"{path!r} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise ValueError(f"{path!r} line {i} has {len(r)} fields, the header has {len(header)}")
    target = header[-1] if target is None else target
    if target not in header:
        raise ValueError(f"{path!r} has no column {target!r}; its columns are {header}")
    t = header.index(target)
    columns = [j for j in range(len(header)) if j != t]
    if not columns:
        raise ValueError(f"{path!r} has no feature column besides the target {target!r}")
    X = np.empty((len(body), len(columns)))
    for k, j in enumerate(columns):
        for i, r in enumerate(body):
            try:
                X[i, k] = float(r[j])
            except ValueError:
                raise ValueError(
                    f"{path!r} column {header[j]!r} is not numeric (line {i + 2}: {r[j]!r}); "
                    "encode it or drop it"
                ) from None
    raw = [r[t].strip() for r in body]
    try:
        y = np.array([float(v) for v in raw])
    except ValueError:
        y = np.array(raw, dtype=object)
    return Dataset(X, y, [header[j] for j in columns], target, _is_classification(y), path)
