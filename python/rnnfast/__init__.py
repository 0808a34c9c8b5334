"""rnnfast: fused RNN kernels (C++ CPU, optional CUDA) behind a NumPy-first API.

The public surface only; see rnnfast.functional for arrays, rnnfast.nn for layers, rnnfast.reference
for the NumPy specification.
"""
from importlib.metadata import PackageNotFoundError as _PNF
from importlib.metadata import version as _version

from . import functional, reference
from .backends import available, backends
from .functional import rnn_backward, rnn_forward
from .nn import RNN

try:
    __version__ = _version("rnnfast")
except _PNF:  # running from a source tree
    __version__ = "0.0.0+local"


def info() -> dict:
    """Version, backends (with the reason any is missing), BLAS, CPU features and threads."""
    from ._info import collect
    return collect()


__all__ = ["RNN", "rnn_forward", "rnn_backward", "backends", "available", "functional", "reference", "info",
           "__version__"]
