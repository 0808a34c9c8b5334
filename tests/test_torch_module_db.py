"""PyTorch's own module tests for nn.RNN / LSTM / GRU (the ModuleInfo samples of
torch/testing/_internal/common_modules.py, CPU) driven against rnnfast.torch's drop-ins, torch's modules the oracle.

What it is: for every sample torch ships (unbatched input, given hx, bias, batch_first, bidirectional, nonlinearity,
LSTM proj_size 0 and 2) in float32 and float64, train and eval: the outputs and every gradient equal torch's, the
sample's own reference function holds, gradcheck (batched gradients included) and gradgradcheck pass in float64,
torch.save/load (weights_only too) and deepcopy round-trip, non-contiguous inputs give the same numbers, and every
error sample raises torch's error type and message. A check counts only where torch's own module passes it.
What it is not: torch's test runner (test_modules.py is not shipped in the wheel). pytest runs a subset (_cases);
`python test_torch_module_db.py` runs every case and prints the pass fraction per module.
"""
import copy
import io
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")       # torch.testing._internal imports it
rt = pytest.importorskip("rnnfast.torch")
cm = pytest.importorskip("torch.testing._internal.common_modules")
from torch.utils._pytree import tree_leaves  # noqa: E402

OURS = {torch.nn.RNN: rt.RNN, torch.nn.LSTM: rt.LSTM, torch.nn.GRU: rt.GRU}
INFOS = [mi for mi in cm.module_db if mi.module_cls in OURS]
TOL = {torch.float32: dict(rtol=1e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _samples(mi, dtype, training):
    return mi.module_inputs_func(mi, device="cpu", dtype=dtype, requires_grad=True, training=training)


def _build(cls, sample, dtype, training):
    torch.manual_seed(0)
    m = cls(*sample.constructor_input.args, **sample.constructor_input.kwargs).to(dtype)
    m.train(training)
    return m


def _args(sample):
    """Fresh leaf copies of the sample's forward arguments (tensors and tuples of tensors)."""
    def fresh(a):
        if isinstance(a, torch.Tensor):
            return a.detach().clone().requires_grad_(a.requires_grad)
        if isinstance(a, tuple):
            return tuple(fresh(b) for b in a)
        return a
    return [fresh(a) for a in sample.forward_input.args], dict(sample.forward_input.kwargs)


def _close(a, b, dtype):
    a, b = tree_leaves(a), tree_leaves(b)
    return len(a) == len(b) and all(
        x.shape == y.shape and torch.allclose(x.detach().to(dtype), y.detach().to(dtype), **TOL[dtype])
        for x, y in zip(a, b))


def _out_and_grads(m, sample):
    args, kwargs = _args(sample)
    out = m(*args, **kwargs)
    leaves = [t for t in tree_leaves(out) if t.is_floating_point()]
    loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).reshape(t.shape)).sum() for t in leaves)
    loss.backward()
    return out, [a.grad for a in tree_leaves(args) if isinstance(a, torch.Tensor)] + [p.grad for p in m.parameters()]


def check_forward_backward(cls, sample, dtype, training, ref_m):
    m = _build(cls, sample, dtype, training)
    out, grads = _out_and_grads(m, sample)
    rout, rgrads = _out_and_grads(ref_m, sample)
    assert _close(out, rout, dtype), "outputs differ from torch's"
    assert _close(grads, rgrads, dtype), "gradients differ from torch's"


def check_reference_fn(cls, sample, dtype, training, ref_m):
    m = _build(cls, sample, dtype, training)
    args, kwargs = _args(sample)
    with torch.no_grad():
        out = m(*args, **kwargs)
        want = sample.reference_fn(m, *args, **kwargs)   # common_modules wraps it: (m, params, *args)
    assert _close(out, want, dtype), "the sample's reference function disagrees"


def _gradfn(m, sample):
    args, kwargs = _args(sample)
    flat = [a for a in tree_leaves(args) if isinstance(a, torch.Tensor)]
    params = list(m.parameters())

    def fn(*xs):
        it = iter(xs[:len(flat)])
        def put(a):
            if isinstance(a, torch.Tensor):
                return next(it)
            return tuple(put(b) for b in a) if isinstance(a, tuple) else a
        return tuple(tree_leaves(m(*[put(a) for a in args], **kwargs)))
    return fn, tuple(flat + params)


def check_gradcheck(cls, sample, dtype, training, ref_m):
    fn, inputs = _gradfn(_build(cls, sample, dtype, training), sample)
    assert torch.autograd.gradcheck(fn, inputs, check_batched_grad=True)


def check_gradgradcheck(cls, sample, dtype, training, ref_m):
    fn, inputs = _gradfn(_build(cls, sample, dtype, training), sample)
    assert torch.autograd.gradgradcheck(fn, inputs, check_batched_grad=False)


def check_save_load_copy(cls, sample, dtype, training, ref_m):
    m = _build(cls, sample, dtype, training)
    args, kwargs = _args(sample)
    with torch.no_grad():
        want = m(*args, **kwargs)
    buf = io.BytesIO()
    torch.save(m, buf)
    for weights_only in (False, True):
        buf.seek(0)
        with torch.serialization.safe_globals([cls]):
            m2 = torch.load(buf, weights_only=weights_only)
        assert type(m2) is cls
        with torch.no_grad():
            assert _close(m2(*args, **kwargs), want, dtype), f"torch.load(weights_only={weights_only}) differs"
    with torch.no_grad():
        assert _close(copy.deepcopy(m)(*args, **kwargs), want, dtype), "deepcopy differs"


def check_non_contiguous(cls, sample, dtype, training, ref_m):
    m = _build(cls, sample, dtype, training)
    args, kwargs = _args(sample)

    def spread(a):          # the same values, every other element of a bigger buffer
        if isinstance(a, torch.Tensor):
            b = torch.empty(*a.shape, 2, dtype=a.dtype)[..., 0]
            return b.copy_(a.detach())
        return tuple(spread(x) for x in a) if isinstance(a, tuple) else a
    with torch.no_grad():
        want = m(*args, **kwargs)
        got = m(*[spread(a) for a in args], **kwargs)
    assert _close(got, want, dtype)


CHECKS = {"forward_backward": check_forward_backward, "reference_fn": check_reference_fn,
          "gradcheck": check_gradcheck, "gradgradcheck": check_gradgradcheck,
          "save_load_copy": check_save_load_copy, "non_contiguous": check_non_contiguous}
F64_ONLY = {"gradcheck", "gradgradcheck"}


def _cases(mi, check, quick):
    """Every sample in float32 and float64, train and eval; `quick` (the pytest run) takes one mode per dtype
    (the samples have no dropout, so the modes compute the same), every eighth sample for gradcheck and one
    (unidirectional; LSTM's with projections) for gradgradcheck: those run the drop-in's op-level double
    backward hundreds of times (test_torch_features.py has more of both on small shapes)."""
    gg = 2 if mi.module_cls is torch.nn.LSTM else 0
    for dtype in (torch.float32, torch.float64):
        if check in F64_ONLY and dtype != torch.float64:
            continue
        modes = (False,) if check in F64_ONLY else ((dtype == torch.float32,) if quick else (True, False))
        for training in modes:
            for i, s in enumerate(_samples(mi, dtype, training)):
                if quick and ((check == "gradcheck" and i % 8 != 3) or (check == "gradgradcheck" and i != gg)):
                    continue
                yield f"{dtype}-{'train' if training else 'eval'}-{i}", s, dtype, training


def run_check(mi, check, cls, quick=False):
    """-> (passed, counted, failures): the cases where torch's own module passes `check`, and which of them
    `cls` passes too."""
    fn = CHECKS[check]
    passed = counted = 0
    failures = []
    for name, s, dtype, training in _cases(mi, check, quick):
        ref_m = _build(mi.module_cls, s, dtype, training)
        try:
            fn(mi.module_cls, s, dtype, training, _build(mi.module_cls, s, dtype, training))
        except Exception:
            continue                      # torch itself fails it: not counted
        counted += 1
        try:
            fn(cls, s, dtype, training, ref_m)
            passed += 1
        except Exception as e:
            failures.append(f"{name} {s.constructor_input.kwargs}: {type(e).__name__}: {str(e)[:200]}")
    return passed, counted, failures


def run_errors(mi, cls):
    """torch's error samples: each must raise the same type and message on the drop-in."""
    passed = counted = 0
    failures = []
    for dtype in (torch.float32, torch.float64):
        for e in mi.module_error_inputs_func(mi, device="cpu", dtype=dtype, requires_grad=False, training=True):
            counted += 1
            s = e.module_error_input
            try:
                m = cls(*s.constructor_input.args, **s.constructor_input.kwargs)
                if e.error_on == cm.ModuleErrorEnum.FORWARD_ERROR:
                    m(*s.forward_input.args, **s.forward_input.kwargs)
            except e.error_type as err:
                if re.search(e.error_regex, str(err)):
                    passed += 1
                    continue
                failures.append(f"{s.constructor_input.kwargs}: message {str(err)[:200]!r}")
                continue
            except Exception as err:
                failures.append(f"{s.constructor_input.kwargs}: {type(err).__name__} instead of {e.error_type}")
                continue
            failures.append(f"{s.constructor_input.args} {s.constructor_input.kwargs}: no error")
    return passed, counted, failures


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("mi", INFOS, ids=lambda mi: mi.name)
def test_module_db_samples_pass_on_the_drop_in(mi, check):
    _, counted, failures = run_check(mi, check, OURS[mi.module_cls], quick=True)
    assert counted > 0
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("mi", INFOS, ids=lambda mi: mi.name)
def test_module_db_error_samples_raise_torchs_errors(mi):
    _, _, failures = run_errors(mi, OURS[mi.module_cls])
    assert not failures, "\n".join(failures[:10])


if __name__ == "__main__":
    tot_p = tot_c = 0
    for mi in INFOS:
        for check in CHECKS:
            p, c, f = run_check(mi, check, OURS[mi.module_cls])
            tot_p, tot_c = tot_p + p, tot_c + c
            print(f"{mi.name:8s} {check:16s} {p}/{c}" + (f"   first failure: {f[0][:150]}" if f else ""))
        p, c, f = run_errors(mi, OURS[mi.module_cls])
        tot_p, tot_c = tot_p + p, tot_c + c
        print(f"{mi.name:8s} {'errors':16s} {p}/{c}" + (f"   first failure: {f[0][:150]}" if f else ""))
    print(f"total {tot_p}/{tot_c} = {tot_p / tot_c:.1%} of what torch's own modules pass")
