"""Loading data for the command line: scikit-learn's bundled datasets, CSV and NPZ files, and local
copies of MNIST and CIFAR-10 in their standard on-disk formats (the layouts torchvision writes; read here
without torchvision, whose PyPI build does not import against a CPU-only torch, and without running code
from the files).

Every failure is a ``ValueError`` / ``FileNotFoundError`` naming the file, the column or the array, so the
CLI can print it as one line. :func:`encode_task` turns a dataset's target into the program's targets for
a loss, and :func:`split_and_standardize` makes the train/test split the comparisons use.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np

from ._files import check_regular_file, load_npz_bounded, read_budget

__all__ = ["BUNDLED", "VISION", "Dataset", "encode_task", "load_dataset", "split_and_standardize"]

#: scikit-learn loaders by name, and whether the target is class labels.
BUNDLED = {
    "breast_cancer": ("load_breast_cancer", True),
    "digits": ("load_digits", True),
    "wine": ("load_wine", True),
    "iris": ("load_iris", True),
    "diabetes": ("load_diabetes", False),
}

#: Image datasets read from a local copy as ``NAME:ROOT`` (nothing is downloaded), in the layouts that
#: torchvision's dataset classes write.
VISION = ("mnist", "cifar10")


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


def load_dataset(
    source: str, *, target: str | None = None, max_samples: int | None = None, split: str = "train"
) -> Dataset:
    """Load a bundled dataset by name, or a ``.csv`` / ``.npz`` file.

    Parameters
    ----------
    source : str
        One of :data:`BUNDLED`; a path: a CSV has a header row and every column but the target must be
        numeric, an NPZ holds arrays ``X`` (n, d) and ``y`` (n,) (or the array named by ``target``); or
        ``mnist:ROOT`` / ``cifar10:ROOT`` for a local copy (MNIST: the IDX files, plain or gzipped, in
        ``ROOT/MNIST/raw/``, ``ROOT/raw/`` or ``ROOT``; CIFAR-10: ``ROOT/cifar-10-batches-bin/`` or
        ``ROOT/cifar-10-batches-py/``); nothing is downloaded; images are flattened to rows in [0, 1].
    target : str, optional
        The target column of a CSV (default: the last column) or the target array of an NPZ (default ``y``).
    max_samples : int, optional
        Keep the first ``max_samples`` rows (MNIST and CIFAR-10 have 60,000 and 50,000 training images).
    split : {"train", "test"}
        Which part of MNIST / CIFAR-10 to read (the other sources have one part).

    Returns
    -------
    Dataset
    """
    dataset = _load(source, target, split)
    if max_samples is not None:
        if int(max_samples) < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        dataset.X, dataset.y = dataset.X[: int(max_samples)], dataset.y[: int(max_samples)]
    return dataset


def _load(source: str, target: str | None, split: str) -> Dataset:
    name, sep, root = source.partition(":")
    if sep and name.lower() in VISION:
        return _load_vision(name.lower(), root, split)
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
    check_regular_file(source, "data file (.csv or .npz)")
    lower = source.lower()
    if lower.endswith(".npz"):
        return _load_npz(source, target or "y")
    if lower.endswith(".csv"):
        return _load_csv(source, target)
    raise ValueError(f"{source!r}: unknown data format; expected a .csv or .npz file or a bundled name")


def _load_npz(path: str, target: str) -> Dataset:
    contents = load_npz_bounded(path)
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


#: Cells that mean "no value" in CSV files (pandas' default NA strings, compared case-insensitively).
MISSING = frozenset(
    v.lower() for v in ("", "NA", "N/A", "NaN", "-NaN", "nan", "null", "NULL", "None", "<NA>", "#N/A", "?",
                        "-1.#IND", "1.#QNAN", "-1.#QNAN", "1.#IND", "n/a", "#NA")
)  # fmt: skip


def _load_csv(path: str, target: str | None) -> Dataset:
    import csv

    if os.path.getsize(path) > read_budget() // 8:  # the parsed rows cost several times the file
        raise ValueError(f"{path!r} is {os.path.getsize(path) / 2**30:.1f} GiB; convert it to .npz first")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            # (line number in the file, fields) of every non-blank row: errors name the file's own lines
            numbered = [(reader.line_num, r) for r in reader if r and any(cell.strip() for cell in r)]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path!r} is not UTF-8 text (byte {exc.start}): is it a CSV file?") from None
    except csv.Error as exc:
        raise ValueError(f"{path!r} is not a CSV file this reader accepts: {exc}") from None
    if len(numbered) < 2:
        raise ValueError(f"{path!r} needs a header row and at least one data row")
    header = [h.strip() for h in numbered[0][1]]
    lines = [line for line, _ in numbered[1:]]
    body = [r for _, r in numbered[1:]]
    for line, r in zip(lines, body, strict=True):
        if len(r) != len(header):
            raise ValueError(f"{path!r} line {line} has {len(r)} fields, the header has {len(header)}")
    target = header[-1] if target is None else target
    if target not in header:
        raise ValueError(f"{path!r} has no column {target!r}; its columns are {header}")
    t = header.index(target)
    columns = [j for j in range(len(header)) if j != t]
    if not columns:
        raise ValueError(f"{path!r} has no feature column besides the target {target!r}")
    for j in range(len(header)):
        for line, r in zip(lines, body, strict=True):
            if r[j].strip().lower() in MISSING:
                raise ValueError(
                    f"{path!r} line {line}, column {header[j]!r} has a missing value ({r[j]!r}); "
                    "drop or impute the row first (convexbn does not guess missing values)"
                )
    X = np.empty((len(body), len(columns)))
    for k, j in enumerate(columns):
        for i, r in enumerate(body):
            try:
                X[i, k] = float(r[j])
            except ValueError:
                raise ValueError(
                    f"{path!r} column {header[j]!r} is not numeric (line {lines[i]}: {r[j][:40]!r}); "
                    "encode it or drop it"
                ) from None
            if not np.isfinite(X[i, k]):
                raise ValueError(f"{path!r} line {lines[i]}, column {header[j]!r} is not finite ({r[j]!r})")
    raw = [r[t].strip() for r in body]
    try:
        y = np.array([float(v) for v in raw])
    except ValueError:
        y = np.array(raw, dtype=object)
    else:
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            i = bad[0]
            raise ValueError(f"{path!r} line {lines[i]}, column {target!r} is not finite ({raw[i]!r})")
    return Dataset(X, y, [header[j] for j in columns], target, _is_classification(y), path)


def _load_vision(name: str, root: str, split: str) -> Dataset:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no such directory {root!r} (the root of a local {name} copy)")
    X, y = (_read_mnist if name == "mnist" else _read_cifar10)(root, split == "train")
    X = X.reshape(X.shape[0], -1).astype(np.float64) / 255.0
    names = [f"pixel{j}" for j in range(X.shape[1])]
    return Dataset(X, y.astype(np.int64), names, "label", True, f"{name}:{root}")


def _find(root: str, folders, names) -> str | None:
    for folder in folders:
        for name in names:
            path = os.path.join(root, folder, name)
            if os.path.isfile(path):
                return path
    return None


def _read_idx(path: str, magic: int) -> np.ndarray:
    """One IDX file (LeCun's MNIST format), plain or gzipped: big-endian header, then unsigned bytes.

    The header's shape is checked against the memory budget before the data is read, and exactly that
    many bytes are read (a gzip file that expands beyond them is refused, not decompressed)."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or int.from_bytes(head, "big") != magic:
                raise ValueError(f"{path!r} is not an IDX file of the expected kind (magic {magic:#010x})")
            ndim = magic & 0xFF
            dims = handle.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"{path!r} is truncated inside its header")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            size = int(np.prod(shape, dtype=object))
            if size * 8 > read_budget():  # the float64 copy the loader makes
                raise ValueError(f"{path!r} claims shape {shape} ({size} values), over the memory budget")
            raw = handle.read(size + 1)
    except (OSError, EOFError) as exc:  # gzip's BadGzipFile is an OSError
        raise ValueError(f"{path!r} cannot be read: {exc}") from None
    if len(raw) < size:
        raise ValueError(f"{path!r} is truncated: {len(raw)} bytes of data for shape {shape}")
    if len(raw) > size:
        raise ValueError(f"{path!r} holds more data than its header's shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _read_mnist(root: str, train: bool):
    """MNIST from ``root/MNIST/raw/``, ``root/raw/`` or ``root/`` (torchvision's layout, or bare files)."""
    stem = "train" if train else "t10k"
    folders = ("MNIST/raw", "raw", "")
    paths = [
        _find(root, folders, (f"{stem}-{kind}-ubyte", f"{stem}-{kind}-ubyte.gz"))
        for kind in ("images-idx3", "labels-idx1")
    ]
    if None in paths:
        raise FileNotFoundError(
            f"no MNIST {stem}-images-idx3-ubyte / {stem}-labels-idx1-ubyte (or .gz) under {root!r} "
            "(looked in MNIST/raw/, raw/ and the root itself)"
        )
    images, labels = _read_idx(paths[0], 0x803), _read_idx(paths[1], 0x801)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST under {root!r}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and NumPy arrays only: a data file can run no code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise ValueError(f"refusing to unpickle {module}.{name} from a data file (only arrays are read)")


def _read_cifar10(root: str, train: bool):
    """CIFAR-10 from ``root/cifar-10-batches-bin/`` (the binary version) or ``root/cifar-10-batches-py/``
    (the Python version torchvision downloads; read by an unpickler that accepts arrays only)."""
    stems = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    if os.path.isdir(os.path.join(root, "cifar-10-batches-bin")):
        for stem in stems:
            path = os.path.join(root, "cifar-10-batches-bin", stem + ".bin")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"CIFAR-10 file {path!r} is missing")
            if os.path.getsize(path) > 64 * 2**20:  # a batch is 30.7 MB
                raise ValueError(f"{path!r} is {os.path.getsize(path) / 2**20:.0f} MiB, not a CIFAR-10 batch")
            raw = np.fromfile(path, dtype=np.uint8)
            if raw.size % 3073:
                raise ValueError(f"{path!r} is truncated: {raw.size} bytes is not a multiple of 3073")
            if np.any(raw.reshape(-1, 3073)[:, 0] > 9):
                raise ValueError(f"{path!r} is not a CIFAR-10 binary batch (labels above 9)")
            records = raw.reshape(-1, 3073)
            labels.append(records[:, 0])
            images.append(records[:, 1:])
    elif os.path.isdir(os.path.join(root, "cifar-10-batches-py")):
        for stem in stems:
            path = os.path.join(root, "cifar-10-batches-py", stem)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"CIFAR-10 file {path!r} is missing")
            if os.path.getsize(path) > 64 * 2**20:  # a batch is 31 MB
                raise ValueError(f"{path!r} is {os.path.getsize(path) / 2**20:.0f} MiB, not a CIFAR-10 batch")
            with open(path, "rb") as handle:
                try:
                    batch = _ArrayUnpickler(handle, encoding="latin1").load()
                except ValueError:
                    raise
                except Exception as exc:
                    raise ValueError(f"{path!r} is not a CIFAR-10 batch: {exc}") from None
            data = batch.get("data") if isinstance(batch, dict) else None
            targets = batch.get("labels") if isinstance(batch, dict) else None
            # exact types before any conversion: a pickle of shared references can make a small file
            # stand for a nested list of billions of entries
            if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
                    and data.shape[1] == 3072):  # fmt: skip
                raise ValueError(f"{path!r} is not a CIFAR-10 batch ('data' is not uint8 with 3072 columns)")
            if not (isinstance(targets, list) and len(targets) == data.shape[0]
                    and all(type(v) is int and 0 <= v < 10 for v in targets)):  # fmt: skip
                raise ValueError(f"{path!r} is not a CIFAR-10 batch ('labels' is not a class 0-9 per image)")
            images.append(data)
            labels.append(np.asarray(targets, dtype=np.int64))
    else:
        raise FileNotFoundError(f"no cifar-10-batches-bin/ or cifar-10-batches-py/ under {root!r}")
    return np.concatenate(images), np.concatenate(labels)


def encode_task(dataset: Dataset, loss: str = "auto") -> tuple[str, np.ndarray, np.ndarray | None]:
    """The program's targets for ``dataset`` and ``loss``: ``(loss, y, classes)``.

    ``loss="auto"`` is squared for a real target, logistic for two classes and cross-entropy for more.
    Two classes become -1/+1 (``classes[1]`` is +1) for the logistic and hinge losses; cross-entropy takes
    the class index; the squared loss takes the real target (``classes`` is None).
    """
    y = dataset.y
    if loss == "auto":
        if not dataset.classification:
            loss = "squared"
        else:
            loss = "logistic" if np.unique(y).size == 2 else "cross_entropy"
    if loss == "squared":
        if y.dtype == object:
            raise ValueError(f"target {dataset.target_name!r} is not numeric; use a classification loss")
        return loss, y.astype(np.float64), None
    classes, index = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"target {dataset.target_name!r} has a single class ({classes[0]!r})")
    if loss in ("logistic", "hinge"):
        if classes.size != 2:
            raise ValueError(
                f"loss {loss!r} needs two classes, target {dataset.target_name!r} has {classes.size}; "
                "use --loss cross_entropy"
            )
        return loss, np.where(index == 1, 1.0, -1.0), classes
    if loss != "cross_entropy":
        raise ValueError(f"unknown loss {loss!r}")
    return loss, index, classes


def split_and_standardize(
    X,
    y,
    *,
    test_size: float = 0.25,
    random_state: int = 0,
    stratify: bool = True,
    scale_target: bool = False,
):
    """Train/test split (stratified for class targets) and features standardized on the training part.

    SGD needs standardized inputs; the convex program does not (BN is scale invariant), but both then see
    the same data. ``scale_target`` also centers and scales a real target by its training mean and
    standard deviation (for the squared loss, so that one ``beta`` means the same on every dataset).
    Returns ``X_train, X_test, y_train, y_test``.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    strata = y if stratify and np.unique(y).size <= 20 else None
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=random_state, stratify=strata
    )
    scaler = StandardScaler().fit(X_tr)
    if scale_target:
        mean, std = float(np.mean(y_tr)), float(np.std(y_tr))
        if std == 0:
            raise ValueError("the target is constant on the training part; nothing to fit")
        y_tr, y_te = (y_tr - mean) / std, (y_te - mean) / std
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te
