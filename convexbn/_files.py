"""Reading files whose contents we do not trust (model files, data files) at a bounded cost.

Before anything is decompressed or allocated, each reader checks what the file claims against what it
is: a regular file (a FIFO or a device would block or never end), archive members whose declared sizes fit
the file (a zip bomb declares gigabytes in a megabyte), ``.npy`` headers whose shape times item size is
the member's size (a header may claim 10^12 entries), and a memory budget (:func:`read_budget`). Every
refusal is a ``ValueError`` naming the file and the reason, so callers can turn it into their own error.
"""

from __future__ import annotations

import ast
import gzip
import os
import zipfile

import numpy as np

__all__ = ["check_regular_file", "load_npz_bounded", "read_budget", "read_gzip_bounded"]

#: The most bytes a single file may expand to when read (uncompressed arrays or decompressed data),
#: unless the caller passes another budget: 8 GiB, or half the machine's memory if that is smaller.
DEFAULT_BUDGET = 8 * 2**30


def read_budget() -> int:
    """Bytes one file may expand to: :data:`DEFAULT_BUDGET` or half of the physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_BUDGET
    return int(min(DEFAULT_BUDGET, total // 2))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def check_regular_file(path, what: str = "file") -> str:
    """``path`` as a string; ``FileNotFoundError`` if it does not exist, ``ValueError`` if it is not a
    regular file (a directory, a FIFO, a device: opening those blocks, never ends or fails late)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {what} at {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a {what}")
    if not os.path.isfile(path):
        raise ValueError(f"{path!r} is not a regular file (a FIFO, socket or device?); give a {what}")
    return path


def _npy_header(handle) -> tuple[tuple, np.dtype, int]:
    """``(shape, dtype, header_bytes)`` of the ``.npy`` stream at ``handle``'s start, read by hand: no
    array is allocated and no pickle is loaded."""
    magic = handle.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy array")
    major = magic[6]
    width = 2 if major == 1 else 4
    raw = handle.read(width)
    if len(raw) < width:
        raise ValueError("truncated .npy header")
    length = int.from_bytes(raw, "little")
    if length > 65536 * 16:
        raise ValueError(f"a .npy header of {length} bytes")
    text = handle.read(length)
    try:
        header = ast.literal_eval(text.decode("latin1"))
        shape = tuple(int(s) for s in header["shape"])
        dtype = np.dtype(header["descr"])
    except Exception as exc:  # a malformed header of any kind
        raise ValueError(f"malformed .npy header ({exc})") from None
    if dtype.hasobject:
        raise ValueError("a .npy array of Python objects (pickle); only numeric arrays are read")
    if any(s < 0 for s in shape):
        raise ValueError(f"a .npy shape with a negative size {shape}")
    return shape, dtype, 8 + width + length


def load_npz_bounded(path, *, budget: int | None = None, what: str = ".npz file") -> dict:
    """Every array of an ``.npz`` archive, after checking the archive at a bounded cost.

    Checks, before reading any array: a regular file; at most 1,000 members, each an ``.npy`` array;
    declared uncompressed sizes within ``budget`` (default :func:`read_budget`) and at most 64 times the
    file's size plus 1 MiB (zip bombs); each header's shape times item size equal to its member's size.
    Then reads with ``allow_pickle=False``.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file and what is wrong with it.
    """
    path = check_regular_file(path, what)
    budget = read_budget() if budget is None else int(budget)
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > 1000:
                raise ValueError(f"{len(members)} members")
            declared = sum(m.file_size for m in members)
            if declared > min(budget, 64 * size + 2**20):
                raise ValueError(
                    f"its members declare {_size(declared)} of data in a {_size(size)} file "
                    f"(a zip bomb?; the budget is {_size(budget)})"
                )
            for member in members:
                if not member.filename.endswith(".npy"):
                    raise ValueError(f"member {member.filename!r} is not a .npy array")
                with archive.open(member) as handle:
                    shape, dtype, offset = _npy_header(handle)
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize + offset
                if need != member.file_size:
                    raise ValueError(
                        f"array {member.filename[:-4]!r} claims shape {shape} of {dtype} ({_size(need)}), "
                        f"its member holds {_size(member.file_size)}"
                    )
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError) as exc:
        raise ValueError(f"{path!r} is not a readable {what} (corrupt or truncated?): {exc}") from None


def read_gzip_bounded(path, limit: int) -> bytes:
    """The decompressed bytes of a gzip file, refusing (``ValueError``) more than ``limit`` bytes."""
    with gzip.open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path!r} decompresses to more than {_size(limit)}; it is not the expected file")
    return data
