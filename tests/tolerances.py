"""Every numerical tolerance of the correctness tests, in one place, named by what is compared.
Not tests; import the names (tolerances.TOL64, ...) instead of writing rtol/atol in a test."""
from __future__ import annotations

import numpy as np

# float64 kernel vs the float64 NumPy reference (or torch in float64): equal up to summation order.
TOL64 = dict(rtol=1e-9, atol=1e-10)
# The same float64 math regrouped (chunked forward with the state carried, truncated BPTT, a layer vs the
# functional call, batch_first vs time-major): tighter than TOL64.
SAME64 = dict(rtol=1e-10, atol=1e-12)
# The same float64 kernel on a permuted or re-laid-out input: a few ulps.
EXACT64 = dict(rtol=1e-12, atol=1e-13)
# One step computed by hand in float64.
HAND = dict(rtol=1e-14)
# Central differences in float64 against an analytic gradient (step 1e-6).
FD = dict(rtol=1e-5, atol=1e-7)
FD_GATED = dict(rtol=1e-6, atol=1e-8)   # the gated cells' smaller test problems resolve tighter

# float32 layers against torch's float32 layers (two different float32 computations, no float64 oracle):
# outputs, the input gradient, parameter gradients (sums over T*N terms).
TORCH32_OUT = dict(atol=2e-6)
TORCH32_DX = dict(atol=1e-5)
TORCH32_GRAD = dict(atol=5e-5)

# float32: the kernel's error against a float64 reference may be at most F32_FACTOR times the float32
# reference's own error, plus F32_ATOL (relative to the largest magnitude) (docs/design.md, "Tests").
F32_FACTOR = 2.0
F32_ATOL = 2e-5


def assert_f32_close(got32, ref64, ref32, name=""):
    """got32 (float32 kernel) vs ref64; allowed error = F32_FACTOR * |ref32 - ref64| + F32_ATOL (elementwise max)."""
    err = np.abs(got32.astype(np.float64) - ref64)
    ref_err = np.abs(ref32.astype(np.float64) - ref64)
    bound = F32_FACTOR * ref_err.max(initial=0.0) + F32_ATOL * max(1.0, np.abs(ref64).max(initial=0.0))
    assert err.max(initial=0.0) <= bound, f"{name}: max err {err.max()} > bound {bound}"
