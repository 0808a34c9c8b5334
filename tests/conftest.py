"""pytest configuration: makes tests/ importable so test files can import rnn_helpers, and the `isa` fixture
(run a kernel test once per kernel build). Not a place for test logic."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest
from rnn_helpers import CPU_AVAILABLE, ISAS


@pytest.fixture(params=ISAS)
def isa(request):
    """Selects the kernel build in-process for one test and restores the previous one afterwards."""
    if not CPU_AVAILABLE:
        pytest.skip("cpu backend missing")
    from rnnfast import _C
    if request.param not in _C.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    old = _C.isa()
    _C.set_isa(request.param)
    try:
        yield request.param
    finally:
        _C.set_isa(old)
