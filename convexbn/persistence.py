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
import zipfile

import numpy as np

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
    return BNNetwork(**{name: contents[name] for name in _NETWORK_ARRAYS}, **meta["network"])


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

    from . import __version__

    check_is_fitted(estimator)
    arrays, network_fields = _network_arrays(estimator.network_)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "convexbn_version": __version__,
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
    from . import __version__

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(
            f"{path!r} is not a readable convexbn {what} file (corrupt or truncated?): {exc}"
        ) from exc
    if "metadata" not in contents:
        raise ModelFileError(f"{path!r} is an .npz archive but not a convexbn {what} file (no metadata)")
    try:
        meta = json.loads(contents.pop("metadata").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path!r}: the metadata is corrupt: {exc}") from exc
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
    expected = meta.get("sha256", {})
    if set(expected) != set(contents):
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
    from . import __version__

    if not isinstance(network, BNNetwork):
        raise TypeError(f"expected a BNNetwork, got {type(network).__name__}")
    arrays, network_fields = _network_arrays(network)
    meta = {
        "format": NETWORK_FORMAT,
        "format_version": FORMAT_VERSION,
        "convexbn_version": __version__,
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
    return _network_from(meta, contents), meta.get("report", {})


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
    from .estimators import ConvexBNClassifier, ConvexBNRegressor

    meta, contents = _read_archive(path, FORMAT, check_version, "model")
    classes = {"ConvexBNClassifier": ConvexBNClassifier, "ConvexBNRegressor": ConvexBNRegressor}
    cls = classes.get(meta.get("class"))
    if cls is None:
        raise ModelFileError(f"{path!r} holds an unknown estimator class {meta.get('class')!r}")
    if expected_class is not None and not issubclass(cls, expected_class):
        raise ModelFileError(f"{path!r} holds a {cls.__name__}, not a {expected_class.__name__}")

    estimator = cls(**meta["params"])
    estimator.network_ = _network_from(meta, contents)
    for key, value in meta["fitted"].items():
        setattr(estimator, key, value)
    if "neurons_" not in meta["fitted"]:  # written before the shared-neuron program: per-output networks
        estimator.neurons_ = "per_output"
    if "feature_names_in_" in meta:
        estimator.feature_names_in_ = np.asarray(meta["feature_names_in_"], dtype=object)
    if "classes" in contents:
        classes_ = contents["classes"]
        if meta["classes_dtype"] == "object":
            classes_ = classes_.astype(object)
        estimator.classes_ = classes_
    return estimator
