"""A restricted unpickler for the Planetoid ``ind.*`` files.

``pickle.load`` runs any callable a file names (``os.system`` included), so a pickle is code, not
data. The Planetoid files need only a handful of globals; :class:`RestrictedUnpickler` resolves
exactly those, from a fixed table (it never imports a module a file names), and refuses the rest.

The table was found by tracing ``find_class`` over the real files (``ind.{cora,citeseer}.*``):
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` (the dense label
arrays and the arrays inside the sparse matrices), ``scipy.sparse.csr.csr_matrix`` (features),
``collections.defaultdict`` and ``__builtin__.list`` (the adjacency dict). The files are Python 2
pickles, hence ``encoding='latin1'`` and the ``__builtin__`` spelling; the newer module paths of
the same objects (``builtins``, ``numpy._core``, ``scipy.sparse._csr``) are accepted too.
"""
from __future__ import annotations

import os
import pickle
from typing import IO, Any

import numpy as np
import scipy.sparse

from ..errors import UserError

__all__ = ["RestrictedUnpickler", "ForbiddenGlobalError", "restricted_load", "ALLOWED_GLOBALS"]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    from numpy.core import multiarray

    table: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for module in ("scipy.sparse.csr", "scipy.sparse._csr", "scipy.sparse"):
        table[(module, "csr_matrix")] = scipy.sparse.csr_matrix
    table[("collections", "defaultdict")] = __import__("collections").defaultdict
    for module in ("__builtin__", "builtins"):
        table[(module, "list")] = list
    return table


#: ``(module, name) -> object``: the only globals a Planetoid pickle may reference.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _allowed_globals()


class ForbiddenGlobalError(UserError, pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS` (nothing of it ran); a user
    error, reported as one line by the CLI."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`.

    Parameters
    ----------
    file : binary file object
        The pickle stream.
    encoding : str, default ``'latin1'``
        How Python 2 ``str`` objects are decoded (``latin1`` keeps numpy buffers byte-exact).
    source : str, optional
        Name of the file, used in error messages.

    Raises
    ------
    ForbiddenGlobalError
        (a ``pickle.UnpicklingError``) naming the refused global, e.g. ``posix.system``.

    Examples
    --------
    >>> import io, pickle
    >>> from dgl_rbgt.data.unpickler import RestrictedUnpickler
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps([1, 2]))).load()
    [1, 2]
    >>> evil = b"cos\\nsystem\\n(S'echo hi'\\ntR."
    >>> RestrictedUnpickler(io.BytesIO(evil)).load()
    Traceback (most recent call last):
    ...
    dgl_rbgt.data.unpickler.ForbiddenGlobalError: forbidden global 'os.system' in pickle <stream>; ...
    """

    def __init__(self, file: IO[bytes], *, encoding: str = "latin1", source: str | None = None):
        super().__init__(file, encoding=encoding)
        self._source = source or "<stream>"

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise ForbiddenGlobalError(
                f"forbidden global '{module}.{name}' in pickle {self._source}; only these are "
                f"allowed: {allowed}"
            ) from None


def restricted_load(file: str | os.PathLike | IO[bytes]) -> Any:
    """Unpickle a file (path or binary file object) with :class:`RestrictedUnpickler`.

    Examples
    --------
    >>> import collections, io, pickle
    >>> from dgl_rbgt.data.unpickler import restricted_load
    >>> graph = collections.defaultdict(list, {0: [1], 1: [0]})
    >>> restricted_load(io.BytesIO(pickle.dumps(graph)))
    defaultdict(<class 'list'>, {0: [1], 1: [0]})
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            return RestrictedUnpickler(fh, source=os.fspath(file)).load()
    return RestrictedUnpickler(file, source=getattr(file, "name", None)).load()
