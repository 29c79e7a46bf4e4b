"""Saving and loading fitted estimators in a portable format (no pickle).

A model file is one ``.npz`` archive (``numpy.savez``, read back with ``allow_pickle=False``):

- the arrays of the recovered network (``weights``, ``gamma``, ``alpha``, ``output``, ``running_mean``,
  ``running_norm``) and, for a classifier, ``classes``;
- ``metadata``: a JSON document (stored as a uint8 array) with ``format`` (``"convexbn-model"``),
  ``format_version``, the ``convexbn_version`` that wrote it, the estimator ``class``, its ``params``
  (``get_params()``), its scalar fitted attributes, and the SHA-256 of every array (dtype, shape and bytes).

Loading checks each of these and raises :class:`ModelFileError` naming what is wrong: not a model file,
a corrupt or truncated file (checksum or archive error), another format version, another convexbn
version (pass ``check_version=False`` to accept it anyway), another estimator class. Float arrays are
stored as they are, so a loaded model predicts bit for bit what the saved one did.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

from . import _version
from ._files import load_npz_bounded
from .network import BNNetwork

__all__ = ["save_estimator", "load_estimator", "save_network", "load_network", "ModelFileError", "FORMAT",
           "FORMAT_VERSION"]  # fmt: skip

FORMAT = "convexbn-model"
NETWORK_FORMAT = "convexbn-network"
FORMAT_VERSION = 1
_NETWORK_ARRAYS = ("weights", "gamma", "alpha", "output", "running_mean", "running_norm")
_FITTED_SCALARS = (
    "n_features_in_", "n_neurons_", "objective_", "solver_", "n_iter_", "n_arrangements_",
    "constraint_violation_", "equivalence_gap_", "_y_ndim", "beta_", "lower_bound_", "gap_",
    "estimated_gap_", "certified_", "dual_ratio_", "arrangements_method_", "history_", "neurons_",
)  # fmt: skip


class ModelFileError(ValueError):
    """A model file cannot be loaded: not a convexbn model, corrupt, or written by another version."""


#: The estimator classes a model file may hold, by name: filled by :func:`register_estimator` (the
#: estimators module registers its classes), so that this module never imports the estimators.
ESTIMATORS: dict = {}
#: This package's estimator classes and the module that registers each: ``import convexbn`` imports no
#: estimator (its names load on first use), so :func:`load_estimator` imports that module when a file names
#: one of them first (by name, the way entry points load plugins: this module still imports no estimator).
PACKAGE_ESTIMATORS = {"ConvexBNClassifier": "convexbn.estimators", "ConvexBNRegressor": "convexbn.estimators"}


def register_estimator(cls):
    """Class decorator: let :func:`load_estimator` build ``cls`` from a model file naming it."""
    ESTIMATORS[cls.__name__] = cls
    return cls


def _digest(array: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{array.dtype.str}|{array.shape}|".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _json_param(name, value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if name == "dtype":
        return str(value).replace("torch.", "")
    raise ModelFileError(
        f"parameter {name}={value!r} cannot be stored in a portable model file; "
        "use an int or None for random_state and plain strings/numbers for the others"
    )


def _network_arrays(network: BNNetwork) -> tuple[dict, dict]:
    """The network's arrays (float64) and its scalar fields, as stored in every archive."""
    arrays = {name: np.asarray(getattr(network, name), dtype=np.float64) for name in _NETWORK_ARRAYS}
    return arrays, {"n_train": int(network.n_train), "beta": float(network.beta), "loss": network.loss}


def _network_from(meta: dict, contents: dict) -> BNNetwork:
    """The stored network, after checking that its arrays and fields make one (``ValueError`` if not)."""
    from .losses import LOSSES

    fields = meta["network"]
    if not isinstance(fields, dict) or set(fields) != {"n_train", "beta", "loss"}:
        raise ValueError(f"network fields {fields!r} are not {{n_train, beta, loss}}")
    n_train, beta, loss = fields["n_train"], fields["beta"], fields["loss"]
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
        raise ValueError(f"n_train is {n_train!r}, not a positive integer")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta is {beta!r}, not a finite number >= 0")
    if loss not in LOSSES:
        raise ValueError(f"loss is {loss!r}, not one of {sorted(LOSSES)}")
    arrays = {name: contents[name] for name in _NETWORK_ARRAYS}
    for name, array in arrays.items():
        if array.dtype != np.float64:
            raise ValueError(f"array {name!r} has dtype {array.dtype}, not float64")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"array {name!r} holds NaN or infinite values")
    W, V = arrays["weights"], arrays["output"]
    if W.ndim != 2 or V.ndim != 2 or V.shape[0] != W.shape[1]:
        raise ValueError(f"weights {W.shape} and output {V.shape} are not (d, m) and (m, C)")
    for name in ("gamma", "alpha", "running_mean", "running_norm"):
        if arrays[name].shape != (W.shape[1],):
            raise ValueError(f"array {name!r} has shape {arrays[name].shape}, not ({W.shape[1]},)")
    return BNNetwork(**arrays, n_train=n_train, beta=float(beta), loss=loss)


def _checked(path, build):
    """``build()``; an error from crafted or inconsistent metadata becomes :class:`ModelFileError`."""
    try:
        return build()
    except ModelFileError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"{path!r} is corrupt or was edited: its metadata and arrays do not make a model "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def save_estimator(estimator, path) -> None:
    """Write a fitted :class:`~convexbn.ConvexBNClassifier` / :class:`~convexbn.ConvexBNRegressor`.

    Parameters
    ----------
    estimator : fitted estimator
    path : str or path-like
        Destination; written to a temporary file first and renamed, so an interrupted save never leaves
        a torn file.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    arrays, network_fields = _network_arrays(estimator.network_)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "convexbn_version": _version.__version__,
        "class": type(estimator).__name__,
        "params": {k: _json_param(k, v) for k, v in estimator.get_params(deep=False).items()},
        "network": network_fields,
        "fitted": {k: getattr(estimator, k) for k in _FITTED_SCALARS if hasattr(estimator, k)},
    }
    if hasattr(estimator, "feature_names_in_"):
        meta["feature_names_in_"] = [str(f) for f in estimator.feature_names_in_]
    if hasattr(estimator, "classes_"):
        classes = np.asarray(estimator.classes_)
        meta["classes_dtype"] = "object" if classes.dtype == object else classes.dtype.str
        if classes.dtype == object:
            if not all(isinstance(c, str) for c in classes):
                raise ModelFileError("only numeric or string class labels can be saved")
            classes = classes.astype(str)
        arrays["classes"] = classes
    _write_archive(path, arrays, meta)


def _write_archive(path, arrays: dict, meta: dict) -> str:
    """Write ``arrays`` and the JSON ``meta`` (with every array's SHA-256) to ``path`` (.npz) atomically."""
    meta = {**meta, "sha256": {name: _digest(a) for name, a in arrays.items()}}
    payload = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    # a unique temporary file in the destination's folder, flushed to disk, then renamed over the
    # destination: a crash at any point leaves either the old file or the new one, never a torn one
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, metadata=payload, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _read_archive(path, fmt: str, check_version: bool, what: str):
    """Read and check an archive written by :func:`_write_archive`: ``(meta, arrays)``."""
    __version__ = _version.__version__  # read at call time (tests may patch it)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} file at {path!r}")
    try:
        contents = load_npz_bounded(path, what=f"convexbn {what} file")
    except ValueError as exc:
        raise ModelFileError(str(exc)) from None
    if "metadata" not in contents:
        raise ModelFileError(f"{path!r} is an .npz archive but not a convexbn {what} file (no metadata)")
    try:
        meta = json.loads(contents.pop("metadata").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path!r}: the metadata is corrupt: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path!r}: the metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != fmt:
        raise ModelFileError(f"{path!r} is not a convexbn {what} file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path!r} has {what} format version {meta.get('format_version')}, this convexbn reads "
            f"version {FORMAT_VERSION}"
        )
    if check_version and meta.get("convexbn_version") != __version__:
        raise ModelFileError(
            f"{path!r} was written by convexbn {meta.get('convexbn_version')}, this is convexbn "
            f"{__version__}; pass check_version=False to load it anyway"
        )
    expected = meta.get("sha256")
    if not isinstance(expected, dict) or set(expected) != set(contents):
        raise ModelFileError(
            f"{path!r} is corrupt: arrays {sorted(contents)} do not match {sorted(expected)}"
        )
    for name, array in contents.items():
        if _digest(array) != expected[name]:
            raise ModelFileError(f"{path!r} is corrupt: checksum mismatch in array {name!r}")
    return meta, contents


def save_network(network: BNNetwork, path, *, report: dict | None = None) -> str:
    """Write a :class:`~convexbn.BNNetwork` in the portable format (``.npz``, no pickle, checksummed).

    Parameters
    ----------
    network : BNNetwork
    path : str or path-like
        ``.npz`` is appended when missing. Written atomically (temporary file, fsync, rename).
    report : dict, optional
        JSON-serializable facts stored beside the network (the CLI stores its solve report).

    Returns
    -------
    str
        The path written.
    """
    if not isinstance(network, BNNetwork):
        raise TypeError(f"expected a BNNetwork, got {type(network).__name__}")
    arrays, network_fields = _network_arrays(network)
    meta = {
        "format": NETWORK_FORMAT,
        "format_version": FORMAT_VERSION,
        "convexbn_version": _version.__version__,
        "network": network_fields,
        "report": report or {},
    }
    return _write_archive(path, arrays, meta)


def load_network(path, *, check_version: bool = True) -> tuple[BNNetwork, dict]:
    """Load a network written by :func:`save_network`: ``(network, report)``.

    Raises
    ------
    FileNotFoundError, ModelFileError
        As :func:`load_estimator`.
    """
    meta, contents = _read_archive(path, NETWORK_FORMAT, check_version, "network")
    network = _checked(path, lambda: _network_from(meta, contents))
    report = meta.get("report", {})
    if not isinstance(report, dict):
        raise ModelFileError(f"{path!r}: the report is a {type(report).__name__}, not a JSON object")
    return network, report


def load_estimator(path, *, expected_class=None, check_version: bool = True):
    """Load an estimator written by :func:`save_estimator`.

    Parameters
    ----------
    path : str or path-like
    expected_class : type, optional
        Refuse a file holding another estimator class.
    check_version : bool, default=True
        Refuse a file written by another convexbn version.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a convexbn model, is corrupt, or fails a check above.
    """
    meta, contents = _read_archive(path, FORMAT, check_version, "model")
    name = meta.get("class")
    if isinstance(name, str) and name not in ESTIMATORS and name in PACKAGE_ESTIMATORS:
        import importlib

        importlib.import_module(PACKAGE_ESTIMATORS[name])
    cls = ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ModelFileError(f"{path!r} holds an unknown estimator class {meta.get('class')!r}")
    if expected_class is not None and not issubclass(cls, expected_class):
        raise ModelFileError(f"{path!r} holds a {cls.__name__}, not a {expected_class.__name__}")

    return _checked(path, lambda: _estimator_from(cls, meta, contents))


def _estimator_from(cls, meta: dict, contents: dict):
    params = meta["params"]
    if not isinstance(params, dict) or not set(params) <= set(cls().get_params(deep=False)):
        raise ValueError(f"params {sorted(params)!r} are not {cls.__name__}'s")
    estimator = cls(**params)
    estimator.network_ = _network_from(meta, contents)
    fitted = meta["fitted"]
    if not isinstance(fitted, dict) or not set(fitted) <= set(_FITTED_SCALARS):
        raise ValueError(f"fitted attributes {sorted(fitted)!r} are not the stored ones")
    for key, value in fitted.items():
        setattr(estimator, key, value)
    if "neurons_" not in fitted:  # written before the shared-neuron program: per-output networks
        estimator.neurons_ = "per_output"
    if fitted.get("n_features_in_", estimator.network_.n_features) != estimator.network_.n_features:
        raise ValueError(f"n_features_in_ is {fitted['n_features_in_']!r}, the network has "
                         f"{estimator.network_.n_features} inputs")  # fmt: skip
    if "feature_names_in_" in meta:
        names = meta["feature_names_in_"]
        if not isinstance(names, list) or len(names) != estimator.network_.n_features:
            raise ValueError("feature_names_in_ does not name the network's inputs")
        estimator.feature_names_in_ = np.asarray([str(f) for f in names], dtype=object)
    if "classes" in contents:
        classes_ = contents["classes"]
        if meta["classes_dtype"] == "object":
            classes_ = classes_.astype(object)
        if classes_.ndim != 1 or classes_.size < 2:
            raise ValueError(f"classes has shape {classes_.shape}, not (n_classes >= 2,)")
        estimator.classes_ = classes_
    elif cls.__name__ == "ConvexBNClassifier":
        raise ValueError("a classifier without its classes")
    return estimator
