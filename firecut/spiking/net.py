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
        T = self.timesteps
        xs = x.view(T, -1, *x.shape[1:])  # (T, B, C, H, W)
        # Sums in float64, rounded to multiples of GRID: currents equal in exact maths (the same
        # spikes reaching two locations, in any order) then tie exactly, whatever rounding made
        # them (BN folded into the conv, another kernel, onnxruntime). A tie goes to the location
        # that won at the previous step (+0.5 on the integer keys), so the output's running sum
        # stays the winner's. Without this ~10% of predictions move when BN is folded
        # (benchmarks/export_flips.py).
        # (x / GRID: GRID is a power of two, so multiplying by its inverse is the same division)
        with torch.no_grad():
            keys = xs.to(torch.float64, copy=True)  # (T, B, C, H, W): running sums, in place
            for t in range(1, T):  # the same sequential order as cumsum(0), which on CPU is a
                keys[t].add_(keys[t - 1])  # slow strided scan over the outermost dim
            keys.mul_(1 / self.GRID).round_()
            won = []  # per step, (B, C, H', W') flat H*W indices of the winners
            for t in range(T):
                key = keys[t]  # a view: keys is ours, so the tie-break is written into it in place
                if won:
                    flat, w = key.flatten(2), won[-1].flatten(2)
                    flat.scatter_(2, w, flat.gather(2, w).add_(0.5))  # repeated winners: same value
                won.append(torch.nn.functional.max_pool2d(
                    key, self.kernel_size, self.stride, self.padding, self.dilation,
                    ceil_mode=self.ceil_mode, return_indices=True)[1])
            index = torch.stack(won)  # (T, B, C, H', W')
        # One gather over all steps (its backward: one scatter-add into the input's gradient):
        # output[t] = xs[t] at the winners of step t.
        if is_channels_last(x):
            # Gathered as (T*B, H*W, C) rows, a view of an NHWC tensor: the output, and the
            # gradient the backward's scatter-add makes, keep that layout. Gathered NCHW, the
            # gradient reaching the batch norm before the pool is NCHW against its NHWC input, and
            # BN's backward then takes ~6x longer on CPU (a third of a max-pool SNN's step).
            TB, C, H, W = x.shape
            h, w = index.shape[-2:]
            idx = index.flatten(0, 1).permute(0, 2, 3, 1).reshape(TB, h * w, C)  # (T*B, H'*W', C)
            y = x.permute(0, 2, 3, 1).reshape(TB, H * W, C).gather(1, idx)  # (T*B, H'*W', C)
            return y.view(TB, h, w, C).permute(0, 3, 1, 2)  # (T*B, C, H', W'), channels_last
        y = xs.flatten(3).gather(3, index.flatten(3))  # (T, B, C, H'*W')
        return y.reshape(-1, *index.shape[2:])  # (T*B, C, H', W')

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, T={self.timesteps}"


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


