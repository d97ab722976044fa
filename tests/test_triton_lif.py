"""The Triton LIF kernels equal `_FusedLIF`: identical spikes, the same x and threshold gradients.

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1), which must be set before the
kernels are defined: that test runs `compare` in a subprocess, so the variable does not leak into
other tests. On CUDA the same `compare` runs the compiled kernels in process.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SURROGATES = ("atan", "fast_sigmoid", "sigmoid")
RESETS = ("subtract", "zero", "none")


def _inputs(broadcast, per_channel, device, dtype, channels_last, T=4, B=2, C=3, H=16, W=16):
    """x (T, B, C, H, W) or (B, C, H, W); half its values on a 1/8 grid, like the thresholds, so
    some membranes land exactly on the threshold (U - thr == 0 must not spike)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((B, C, H, W) if broadcast else (T, B, C, H, W), generator=g) * 1.5
    grid = torch.rand(x.shape, generator=g) < 0.5
    x = torch.where(grid, (x * 8).round() / 8, x)
    thr = ((torch.rand(C, generator=g) + 0.3) * 8).round() / 8
    thr = thr.view(1, C, 1, 1) if per_channel else thr[0].clone()
    x = x.to(device=device, dtype=dtype)
    if channels_last:  # conv outputs under channels_last: (T*B, C, H, W) in NHWC memory
        flat = x.flatten(0, 1) if not broadcast else x
        flat = flat.contiguous(memory_format=torch.channels_last)
        x = flat if broadcast else flat.view(T, B, C, H, W)
    return x, thr.to(device)


def cases(low_precision=(torch.bfloat16,)) -> list[tuple]:
    """Every option in float32, contiguous; then each surrogate and reset once in each low-precision
    dtype, channels-last, with the other options varied (a full grid there is slow to compile)."""
    full = list(itertools.product(SURROGATES, RESETS, (False, True), (False, True), (False, True),
                                  (1.0, 0.8), (torch.float32,), (False,)))
    flags = itertools.cycle(itertools.product((False, True), (False, True), (True, False)))
    few = [(name, reset, *next(flags), 0.8, dtype, True)
           for dtype in low_precision for name, reset in itertools.product(SURROGATES, RESETS)]
    return full + few


def compare(device="cpu", low_precision=(torch.bfloat16,)) -> list[str]:
    """Runs TritonLIF and _FusedLIF over `cases`; returns one line per mismatch."""
    from firecut.spiking import SURROGATES as DERIVS
    from firecut.spiking.lif import _FusedLIF
    from firecut.spiking.triton_lif import TritonLIF, available

    failures = []
    T = 4
    for name, reset, broadcast, scale, per_channel, beta, dtype, channels_last in cases(low_precision):
        tag = (f"{name} {reset} broadcast={broadcast} scale={scale} per_channel={per_channel} "
               f"beta={beta} {dtype} channels_last={channels_last}")
        x, thr = _inputs(broadcast, per_channel, device, dtype, channels_last)
        assert available(x)
        deriv, param = DERIVS[name]
        outs, grads = [], []
        for fn in (TritonLIF, _FusedLIF):
            xa, ta = x.detach().clone().requires_grad_(), thr.detach().clone().requires_grad_()
            y = fn.apply(xa, ta, T, broadcast, beta, 0.5, deriv, param, scale, reset)
            w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y)
            (y.float() * w.float()).sum().backward()
            outs.append(y)
            grads.append((xa.grad, ta.grad))
        (ya, yb), ((dxa, dta), (dxb, dtb)) = outs, grads
        if ya.dtype != yb.dtype or ya.shape != yb.shape or not torch.equal(ya, yb):
            failures.append(f"{tag}: spikes differ ({int((ya != yb).sum())} elements)")
            continue
        if not (0 < int((ya != 0).sum()) < ya.numel()):
            failures.append(f"{tag}: no spikes or no silences, the comparison is vacuous")
        if dxa.dtype != dxb.dtype or dxa.shape != dxb.shape or dta.shape != dtb.shape:
            failures.append(f"{tag}: gradient dtypes or shapes differ")
            continue
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
        for what, a, b, atol in (("x", dxa, dxb, tol["atol"]), ("thr", dta, dtb, 1e-4)):
            try:
                torch.testing.assert_close(a.float(), b.float(), rtol=tol["rtol"], atol=atol)
            except AssertionError as e:
                failures.append(f"{tag}: {what} gradient: {str(e).splitlines()[1:4]}")
    # LIF's dispatch: TritonLIF here, _FusedLIF with FIRECUT_TRITON=0, same output
    from firecut.spiking import LIF

    lif = LIF(3, threshold=0.7, v_init=0.5, timesteps=T, scale_output=True).to(device)  # fixed thr
    x = torch.randn(T * 2, 3, 5, 5, device=device)
    results = []
    for flag in ("0", "1"):
        os.environ["FIRECUT_TRITON"] = flag
        try:
            assert available(x) == (flag == "1")
            xa = x.clone().requires_grad_()
            y = lif(xa)
            y.sum().backward()
            results.append((y, xa.grad))
        finally:
            del os.environ["FIRECUT_TRITON"]
    (yb, dxb), (ya, dxa) = results
    if not torch.equal(ya, yb) or not torch.allclose(dxa, dxb, rtol=1e-5, atol=1e-6):
        failures.append("LIF(fused=True) differs between the Triton and torch paths")
    return failures


def test_triton_lif_equals_fused_lif_in_interpreter():
    pytest.importorskip("triton", reason="triton is not installed: the Triton LIF is never used")
    tests = Path(__file__).resolve().parent
    script = ("import sys; sys.path.insert(0, %r)\n"
              "import torch\n"
              "from test_triton_lif import compare\n"
              "failures = compare('cpu', (torch.bfloat16, torch.float16))\n"
              "print('\\n'.join(failures) or 'ok')\n"
              "sys.exit(1 if failures else 0)\n") % str(tests)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    env.pop("FIRECUT_TRITON", None)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tests.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.strip() == "ok"


def test_without_cuda_or_interpreter_lif_uses_torch():
    from firecut.spiking import triton_lif

    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 is set for the whole run")
    assert not triton_lif.available(torch.zeros(2))


@pytest.mark.gpu
def test_triton_lif_equals_fused_lif_on_cuda():
    pytest.importorskip("triton")
    failures = compare("cuda", (torch.bfloat16, torch.float16))
    assert not failures, "\n".join(failures)
