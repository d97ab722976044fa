"""The fused multi-step LIF (`spiking.lif._FusedLIF`) as two Triton kernels, forward and backward.

Each program owns BLOCK neurons of one step's tensor (N = B*C*H*W of them) and runs the whole
recurrence over T in registers: the forward reads X once and writes S (and U - thr) once per step;
the backward walks t = T-1..0 carrying dM. The maths, with U[t] the membrane before the threshold:

    forward   U[t]  = beta k[t-1] U[t-1] + X[t] - r[t-1] thr     U[-1] = v_init thr, S[-1] = 0
              S[t]  = H(U[t] - thr)                              (strictly > 0)
              k = 1 - S for reset="zero" (else 1),  r = S for reset="subtract" (else 0)
    backward  dU_t  = g_t (thr if scale) sigma'(U[t] - thr)
              dM_t  = dU_t + beta k_t dM_{t+1}                   dM_T = 0
              dX_t  = dM_t                                       (broadcast input: dX = sum_t dM_t)
              dthr  = sum_t [g_t S[t] (scale) - dU_t - r[t-1] dM_t] + v_init beta dM_0

Saved for backward: U - thr in float32 (T*N floats; `_FusedLIF` on CPU also saves S, to skip a
pass); S is recomputed from it as U - thr > 0. The kernels write dthr per neuron (N floats) and
torch sums it to thr's shape.
Threshold of neuron i: thr[(i // INNER) % C], INNER = H*W for NCHW memory, 1 for channels-last
(NHWC memory: the channel is the fastest dimension), C = 1 for a scalar threshold.

Dispatch: `LIF` uses `TritonLIF` when `available(x)`: x on CUDA and triton importable. Set
FIRECUT_TRITON=0 to use `_FusedLIF` instead (read at every call). With TRITON_INTERPRET=1 set
before this module is imported, the kernels run on CPU tensors through Triton's interpreter (how
the tests check them without a GPU).
"""

from __future__ import annotations

import os

import torch

from firecut.spiking.surrogate import d_atan, d_fast_sigmoid, d_sigmoid

try:  # optional: CPU-only installs run without triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

ATAN, FAST_SIGMOID, SIGMOID = 0, 1, 2  # surrogate, a tl.constexpr
SUBTRACT, ZERO, NONE = 0, 1, 2  # reset, a tl.constexpr
_SURROGATES = {d_atan: ATAN, d_fast_sigmoid: FAST_SIGMOID, d_sigmoid: SIGMOID}
_RESETS = {"subtract": SUBTRACT, "zero": ZERO, "none": NONE}
BLOCK = 1024  # neurons per program; 4 warps -> 8 per thread


def available(x: torch.Tensor, deriv=None) -> bool:
    """True where TritonLIF can run x: on CUDA (or on CPU under TRITON_INTERPRET=1), triton
    importable, FIRECUT_TRITON not "0", and `deriv` (if given) one of the kernels' surrogates."""
    if os.environ.get("FIRECUT_TRITON", "1") == "0" or triton is None:
        return False
    if deriv is not None and deriv not in _SURROGATES:
        return False
    return x.is_cuda or (x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


if triton is not None:

    @triton.jit
    def _lif_fwd(x_ptr, thr_ptr, s_ptr, u_ptr, T, N, C, INNER, beta, v_init,
                 RESET: tl.constexpr, SCALE: tl.constexpr, BROADCAST: tl.constexpr,
                 BLOCK: tl.constexpr):
        # x: (T, N) or (N,) when BROADCAST; s: (T, N) in x's dtype; u: (T, N) float32 = U - thr
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        thr = tl.load(thr_ptr + (offs // INNER) % C, mask=mask, other=1.0).to(tl.float32)
        mem = v_init * thr
        s = tl.zeros([BLOCK], dtype=tl.float32)  # S[-1] = 0
        for _ in range(T):  # t = 0 .. T-1
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if RESET == 1:  # zero
                mem = mem * (1.0 - s)
            mem = mem * beta  # rounded on its own, as in _FusedLIF (fma fusion is off)
            mem = mem + x
            if RESET == 0:  # subtract
                mem = mem - s * thr
            u = mem - thr
            s = tl.where(u > 0, 1.0, 0.0)
            tl.store(u_ptr + offs, u, mask=mask)
            out = s
            if SCALE:
                out = s * thr
            tl.store(s_ptr + offs, out.to(s_ptr.dtype.element_ty), mask=mask)
            if not BROADCAST:
                x_ptr += N
            u_ptr += N
            s_ptr += N

    @triton.jit
    def _lif_bwd(u_ptr, g_ptr, thr_ptr, dx_ptr, dthr_ptr, T, N, C, INNER, beta, v_init, param,
                 SURROGATE: tl.constexpr, RESET: tl.constexpr, SCALE: tl.constexpr,
                 BROADCAST: tl.constexpr, NEED_THR: tl.constexpr, BLOCK: tl.constexpr):
        # u, g: (T, N), pointers at step T-1; dx: (T, N) at step T-1, or (N,) when BROADCAST;
        # dthr: (N,) float32, per-neuron partial sums
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        thr = tl.load(thr_ptr + (offs // INNER) % C, mask=mask, other=1.0).to(tl.float32)
        dm = tl.zeros([BLOCK], dtype=tl.float32)  # dM_{t+1}
        dx_sum = tl.zeros([BLOCK], dtype=tl.float32)
        dthr = tl.zeros([BLOCK], dtype=tl.float32)
        for _ in range(T):  # t = T-1 .. 0
            u = tl.load(u_ptr + offs, mask=mask, other=0.0)  # U[t] - thr
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            s = tl.where(u > 0, 1.0, 0.0)
            if SURROGATE == 0:  # atan: (a/2) / (1 + (pi/2 a U)^2)
                z = u * (1.5707963267948966 * param)
                d = (param * 0.5) / (1.0 + z * z)
            elif SURROGATE == 1:  # fast_sigmoid: 1 / (k |U| + 1)^2
                z = param * tl.abs(u) + 1.0
                d = 1.0 / (z * z)
            else:  # sigmoid: k sig(kU) sig(-kU) = k e / (1 + e)^2, e = exp(-k |U|) (no overflow)
                e = tl.exp(-param * tl.abs(u))
                d = param * e / ((1.0 + e) * (1.0 + e))
            du = d * g
            if SCALE:
                du = du * thr
            if RESET == 0:  # subtract: - S[t] dM_{t+1}, the reset of step t+1
                dthr -= s * dm
            if RESET == 1:  # zero: k_t = 1 - S[t]
                dm = du + beta * (1.0 - s) * dm
            else:
                dm = du + beta * dm
            dthr -= du
            if SCALE:
                dthr += g * s
            if BROADCAST:
                dx_sum += dm
            else:
                tl.store(dx_ptr + offs, dm.to(dx_ptr.dtype.element_ty), mask=mask)
                dx_ptr -= N
            u_ptr -= N
            g_ptr -= N
        if BROADCAST:
            tl.store(dx_ptr + offs, dx_sum.to(dx_ptr.dtype.element_ty), mask=mask)
        if NEED_THR:
            dthr += (v_init * beta) * dm  # dm = dM_0: U[-1] = v_init thr
            tl.store(dthr_ptr + offs, dthr, mask=mask)


def _memory_order(x: torch.Tensor, cdim: int) -> tuple[torch.Tensor, bool]:
    """x as a contiguous tensor, and whether its channel dim `cdim` was moved last: a channels-last
    tensor (what convs give under torch.channels_last) is used as it lies in memory, not copied."""
    if x.dim() > cdim + 1 and not x.is_contiguous():
        xl = x.movedim(cdim, -1)
        if xl.is_contiguous():
            return xl, True
    return x.contiguous(), False


class TritonLIF(torch.autograd.Function):
    """`_FusedLIF` with Triton kernels: same arguments, outputs and gradients (x and thr)."""

    @staticmethod
    def forward(ctx, x, thr, T, broadcast, beta, v_init, deriv, param, scale_output, reset):
        # x: (T, B, C, ...), or (B, C, ...) when broadcast; thr: (1, C, 1, ...) or 0-dim
        xm, last = _memory_order(x, 1 if broadcast else 2)  # (.., B, C, ...) or (.., B, ..., C)
        steps = T if broadcast else x.shape[0]
        step_shape = xm.shape if broadcast else xm.shape[1:]
        N = step_shape.numel()
        C = thr.numel()
        inner = 1 if (last or C == 1) else step_shape[2:].numel()
        thr_f = thr.detach().float().reshape(-1).contiguous()  # (C,)
        S = torch.empty((steps, *step_shape), dtype=x.dtype, device=x.device)
        U = torch.empty((steps, *step_shape), dtype=torch.float32, device=x.device)  # U - thr
        if N and steps:
            _lif_fwd[(triton.cdiv(N, BLOCK),)](
                xm, thr_f, S, U, steps, N, C, inner, float(beta), float(v_init),
                RESET=_RESETS[reset], SCALE=bool(scale_output), BROADCAST=bool(broadcast),
                BLOCK=BLOCK, num_warps=4,
                enable_fp_fusion=False)  # no fma: beta*mem and +x rounded apart, as in torch
        ctx.save_for_backward(U, thr)
        ctx.cfg = (broadcast, beta, v_init, _SURROGATES[deriv], param, scale_output, reset)
        ctx.layout = (last, C, inner, x.dtype)
        return S.movedim(-1, 2) if last else S  # (T, B, C, ...), x's memory format

    @staticmethod
    def backward(ctx, g):
        U, thr = ctx.saved_tensors
        broadcast, beta, v_init, surrogate, param, scale_output, reset = ctx.cfg
        last, C, inner, x_dtype = ctx.layout
        need_thr = ctx.needs_input_grad[1]
        steps, N = U.shape[0], U.shape[1:].numel()
        gm = (g.movedim(2, -1) if last else g).contiguous()  # (T, *step), U's memory order
        dx = torch.empty(U.shape[1:] if broadcast else U.shape, dtype=x_dtype, device=U.device)
        dthr = torch.empty(U.shape[1:], dtype=torch.float32, device=U.device) if need_thr else U
        if N and steps:
            _lif_bwd[(triton.cdiv(N, BLOCK),)](
                U[-1], gm[-1], thr.detach().float().reshape(-1).contiguous(),
                dx if broadcast else dx[-1], dthr, steps, N, C, inner, float(beta), float(v_init),
                float(param), SURROGATE=surrogate, RESET=_RESETS[reset], SCALE=bool(scale_output),
                BROADCAST=bool(broadcast), NEED_THR=need_thr, BLOCK=BLOCK, num_warps=4,
                enable_fp_fusion=True)  # fma is fine here: gradients match to rounding
        if last:
            dx = dx.movedim(-1, 1 if broadcast else 2)
        if need_thr:
            if not (N and steps):
                dthr.zero_()
            dthr = (dthr.movedim(-1, 1) if last else dthr).sum_to_size(thr.shape).to(thr.dtype)
        else:
            dthr = None
        return dx, dthr, *([None] * 8)

