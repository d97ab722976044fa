"""The spiking network: the gated max-pool for inputs that vary over steps, and the wrapper that
runs a converted model over T steps and averages its readout."""

from __future__ import annotations

import torch
from torch import nn

from firecut.errors import FirecutError
from firecut.spiking.lif import LIF, is_channels_last


class SpikingMaxPool2d(nn.Module):
    """Max-pooling for (T*B, C, H, W) inputs that vary over steps, gated by running sums.

    Per step a plain max over spikes or currents overstates the max of their averages
    (E[max] >= max E), which at few steps wrecks conversion. Instead each window passes, at step
    t, the input of the location whose running sum sum_{s<=t} x[s] is largest so far (Rueckauer et
    al. 2017): the winner's spikes stay spikes, and over T steps the output rate approaches the
    max of the input rates. With T = 1 it is nn.MaxPool2d (up to sums closer than GRID).
    """

    GRID = 2.0 ** -10  # running sums this close count as equal (float32 rounding noise is ~1e-6)

    def __init__(self, pool: nn.MaxPool2d, timesteps: int):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding
        self.dilation, self.ceil_mode = pool.dilation, pool.ceil_mode
        self.timesteps = timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T*B, C, H, W)
        index = self.winners(x)  # (T*B, C, H', W')
        # Training: the same values with a faster backward, on the devices whose max-pool backward
        # reads only the indices (_TakeWinners). Otherwise plain ops, which export traces.
        if (self.training and x.requires_grad and torch.is_grad_enabled()
                and x.device.type in ("cpu", "cuda")):
            return _TakeWinners.apply(x, index, self)
        return take(x, index)  # (T*B, C, H', W')

    @torch.no_grad()
    def winners(self, x: torch.Tensor) -> torch.Tensor:
        """(T*B, C, H, W) -> (T*B, C, H', W') int64: per step and window, the flat H*W index of the
        location whose running sum is largest so far; in x's memory layout."""
        T = self.timesteps
        xs = x.view(T, -1, *x.shape[1:])  # (T, B, C, H, W)
        # Keys: running sums in units of GRID, rounded to integers, so that currents equal in
        # exact maths (the same spikes reaching two locations, in any order) tie exactly,
        # whatever rounding made them (BN folded into the conv, another kernel, onnxruntime). A tie
        # goes to the location that won at the previous step (+0.5 on the integer keys), so the
        # output's running sum stays the winner's. Without this ~10% of predictions move when BN
        # is folded (benchmarks/export_flips.py).
        # float64 holds the sum of T float32 values exactly. In training under bf16 autocast the
        # keys are float32, 4x faster to max-pool here: bf16 values have 8-bit mantissas, so their
        # sums are exact in float32 unless the T values differ in size by more than about
        # 2^(16 - log2 T), and the +0.5 tie-break holds while |running sum| < 2^13 (keys < 2^23).
        # Past those bounds a key can round differently from float64's, and where two sums come
        # that close to a grid boundary, pick another winner. Every other dtype keeps float64.
        dtype = torch.float32 if x.dtype == torch.bfloat16 else torch.float64
        keys = torch.empty_like(xs, dtype=dtype)  # (T, B, C, H, W), x's layout
        keys[0].copy_(xs[0]).mul_(1 / self.GRID)  # GRID is a power of two: exact scaling
        for t in range(1, T):  # keys[t] = keys[t-1] + x[t] / GRID, in one pass per step
            torch.add(keys[t - 1], xs[t], alpha=1 / self.GRID, out=keys[t])
        keys.round_()
        won = []  # per step, (B, C, H', W') flat H*W indices of the winners
        for t in range(T):
            key = keys[t]  # a view: keys is ours, so the tie-break is written into it in place
            if won:
                flat, w = key.flatten(2), won[-1].flatten(2)
                flat.scatter_(2, w, flat.gather(2, w).add_(0.5))  # repeated winners: same value
            won.append(torch.nn.functional.max_pool2d(
                key, self.kernel_size, self.stride, self.padding, self.dilation,
                ceil_mode=self.ceil_mode, return_indices=True)[1])
        if is_channels_last(x):  # stacked as (T, B, H', W', C) rows: no copy into NCHW and back
            rows = torch.stack([w.permute(0, 2, 3, 1) for w in won])
            return rows.flatten(0, 1).permute(0, 3, 1, 2)  # (T*B, C, H', W'), channels_last
        return torch.stack(won).flatten(0, 1)  # (T*B, C, H', W')

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, T={self.timesteps}"


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """out[n, c, i, j] = x[n, c].flatten()[index[n, c, i, j]]; (N, C, H, W) -> (N, C, H', W').

    A channels_last x is gathered as (N, H*W, C) rows, a view of its NHWC storage, so the output
    and the gradient of the gather keep that layout: an NCHW gradient reaching the batch norm
    before the pool makes BN's backward ~6x slower on CPU.
    """
    N, C, H, W = x.shape
    h, w = index.shape[-2:]
    if is_channels_last(x):
        rows = index.permute(0, 2, 3, 1).reshape(N, h * w, C)  # a view when index is NHWC
        y = x.permute(0, 2, 3, 1).reshape(N, H * W, C).gather(1, rows)  # (N, H'*W', C)
        return y.view(N, h, w, C).permute(0, 3, 1, 2)
    return x.flatten(2).gather(2, index.flatten(2)).view(N, C, h, w)


class _TakeWinners(torch.autograd.Function):
    """take(x, index) with max-pooling's own backward: the gradient of each output goes to its
    winner, summed where one location wins several windows. The gather's own backward (a
    scatter-add into zeros) makes the same sum, slower on CPU (BENCHMARKS.md, "Training step").
    In bf16 a sum over several windows can differ from the scatter-add's in the last bit."""

    @staticmethod
    def forward(ctx, x, index, pool):  # (N, C, H, W), (N, C, H', W'), SpikingMaxPool2d
        ctx.save_for_backward(index)
        ctx.pool = pool
        ctx.like = (x.shape, x.dtype, x.device, is_channels_last(x))
        return take(x, index)

    @staticmethod
    def backward(ctx, grad):  # (N, C, H', W') -> (N, C, H, W)
        (index,) = ctx.saved_tensors
        p, (shape, dtype, device, cl) = ctx.pool, ctx.like
        # The kernel reads only the input's shape, dtype and layout: an unfilled tensor will do.
        like = torch.empty(shape, dtype=dtype, device=device,
                           memory_format=torch.channels_last if cl else torch.contiguous_format)
        g = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, like, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode, index)
        return g, None, None


class SpikingNet(nn.Module):
    """Runs a converted network for T steps on a static image; returns the mean readout.

    forward: (B, C, H, W) -> (T*B rows inside) -> (B, K) = mean over T of the classifier output.
    """

    def __init__(self, net: nn.Module, timesteps: int):
        super().__init__()
        self.net = net
        self.set_timesteps(timesteps)

    def neurons(self) -> list[LIF]:
        return [m for m in self.net.modules() if isinstance(m, LIF)]

    @property
    def encode_once(self) -> bool:
        return any(n.broadcast_input for n in self.neurons())

    def set_timesteps(self, timesteps: int) -> None:
        if timesteps < 1:
            raise FirecutError("--timesteps must be >= 1")
        self.timesteps = timesteps
        for m in self.net.modules():
            if isinstance(m, (LIF, SpikingMaxPool2d)):
                m.timesteps = timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        T = self.timesteps
        if not self.encode_once:
            x = x.repeat(T, *([1] * (x.dim() - 1)))  # (T*B, C, H, W), t-major
        y = self.net(x)  # (T*B, K)
        return y.view(T, -1, *y.shape[1:]).mean(0)  # (B, K)


