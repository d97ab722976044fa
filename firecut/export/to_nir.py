"""NIR export: a spiking SqueezeNet as a graph a neuromorphic toolchain reads (the `nir` package).

NIR (Pedersen et al., Nature Communications 2024) holds Conv2d (with groups and bias), IF and LIF
neurons that reset to a fixed potential, AvgPool2d, Scale, and sums every edge that ends in a
node. It has no max-pool, concatenation, batch norm, subtract reset or initial membrane. So:

  batch norm       folded into the convs (the unrolled graph, firecut.export.unrolled)
  spike amplitude  firecut's neurons emit theta_c per spike; theta folds into the columns of the
                   conv that reads them: W'[:, c] = W[:, c] * theta_c
  concatenation    the conv reading cat(expand1x1, expand3x3) is split by its input columns into
                   one conv per branch; both end in the next node, where NIR sums them (the bias
                   rides on the first)
  3x3/2 ceil pool  (the average pool of `--pool avg`) NIR's pools have no ceil mode, so a 2x2
                   identity conv with taps [0, 1] and padding 1 extends the map by one zero row
                   and column (size -> size + 1), a SumPool2d 3x3/2 sums each window 2i..2i+2,
                   and a Scale node divides by the window's cells inside the image (9, 6 or 4),
                   so every neuron keeps r = 1 (IF) or r = tau (LIF). A depthwise conv
                   would be smaller, but nir 1.0.8 types a grouped conv's input by its weight's
                   second dimension and refuses the graph
  global pool      AvgPool2d over the whole map; the Output node is (K, 1, 1) per step, and the
                   scores are its mean over the T steps, as SpikingNet's readout

Neurons: NIR's IF and LIF are continuous-time, and a graph carries no time step. firecut's are
one forward-Euler step of dt = 1 per time step, recorded in the graph's metadata (`dt`, with
`timesteps` and `readout`); a toolchain that assumes another dt must rescale tau (snntorch's NIR
import assumes dt = 1e-4). With dt = 1 (what `runner` executes, and firecut's neurons):
  IF   v += r I with r = 1;  z = v > v_threshold;  v = v_reset (0) where z
  LIF  v += (v_leak - v + r I) / tau, with v_leak = 0, tau = 1 / (1 - beta), r = tau:
       v = beta v + I, firecut's leaky neuron
The image enters as it reaches the stem conv, normalised ((pixel/255 - mean)/std, the metadata's
mean and std), at every step; the scores are the Output's currents averaged over T, not spikes.
A net with max-pools, subtract reset or a nonzero initial membrane is refused, naming each lack.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from firecut.errors import FirecutError
from firecut.export.unrolled import UnrolledLIF, UnrolledNet

NIR_KEY = "firecut"  # the graph's metadata entry holding ArtifactMeta as JSON


def _nir():
    try:
        import nir
    except ImportError as e:
        raise FirecutError(f"NIR export needs the nir and nirtorch packages ({e}); "
                           "pip install -e '.[nir]' (or pip install nir nirtorch)") from None
    return nir


# ------------------------------------------------------------------ what NIR can hold
def nir_problems(model: nn.Module) -> list[str]:
    """Why `model` (a firecut net) cannot be a NIR graph exactly; empty when it can."""
    from firecut.spiking import LIF, SpikingNet

    if not isinstance(model, SpikingNet):
        return ["it is a CNN, and NIR holds spiking nets (convert it: firecut train --init CKPT)"]
    net = model.net
    if not (hasattr(net, "features") and hasattr(net, "classifier") and hasattr(net, "keep")):
        return [f"NIR export knows SqueezeNet's graph only, not {type(net).__name__}'s"]
    out = []
    from firecut.spiking.net import SpikingMaxPool2d

    if any(isinstance(m, (nn.MaxPool2d, SpikingMaxPool2d)) for m in net.modules()):
        out.append("max-pooling, which NIR lacks (train the CNN with --pool avg, then convert)")
    neurons = [m for m in net.modules() if isinstance(m, (LIF, UnrolledLIF))]
    if any(m.reset != "zero" for m in neurons):
        out.append("neurons that do not reset to zero, which NIR lacks (fine-tune the SNN with --reset zero)")
    if any(float(m.v_init) != 0 for m in neurons):
        out.append("an initial membrane (v_init), which NIR lacks (fine-tune with --set spiking.v_init=0)")
    return out


def check_nir(model: nn.Module, what: str) -> None:
    problems = nir_problems(model)
    if problems:
        raise FirecutError(f"cannot export {what} as NIR: {'; '.join(problems)}")


# ------------------------------------------------------------------ the graph
@dataclass
class _Source:
    node: str  # a neuron (or the input) whose output is channels [lo, hi) of a conv's input
    lo: int
    hi: int
    amp: np.ndarray  # (hi - lo,) value of one spike per channel (1 for the image)


def _size2(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def window_cells(size: int) -> np.ndarray:
    """(ceil((size-3)/2) + 1,) cells of each 3x3/2 ceil-mode window inside a map of `size`."""
    starts = np.arange(0, size - 1, 2)[: (size - 3 + 1) // 2 + 1]
    return (np.minimum(starts + 3, size) - starts).astype(np.float32)


class _Builder:
    def __init__(self, nir):
        self.nir, self.nodes, self.edges = nir, {}, []

    def add(self, name: str, node, inputs: list[str]) -> str:
        self.nodes[name] = node
        self.edges += [(i, name) for i in inputs]
        return name

    def convs(self, prefix: str, conv: nn.Conv2d, sources: list[_Source], size: int) -> list[str]:
        """One NIR conv per source, its columns scaled by the source's spike amplitude."""
        w = conv.weight.detach().double().numpy()  # (C_out, C_in/g, k, k)
        b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(w.shape[0])
        if conv.groups != 1 and len(sources) > 1:
            raise FirecutError(f"cannot export {prefix}: a grouped conv reading a concatenation")
        names = []
        for i, s in enumerate(sources):
            wi = w[:, s.lo:s.hi] * s.amp.reshape(1, -1, 1, 1)
            name = f"{prefix}.conv" if len(sources) == 1 else f"{prefix}.conv.{i}"
            node = self.nir.Conv2d(input_shape=(size, size), weight=wi.astype(np.float32),
                                   stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                   groups=conv.groups, bias=(b if i == 0 else 0 * b).astype(np.float32))
            names.append(self.add(name, node, [s.node]))
        return names

    def block(self, prefix: str, block: nn.Module, sources: list[_Source], size: int):
        """conv (BN folded) -> [3x3/2 average pools] -> neuron; returns its output and size."""
        nir = self.nir
        tails = self.convs(prefix, block.conv, sources, size)
        c = block.conv.out_channels
        pools = [] if block.pool is None else (list(block.pool) if isinstance(block.pool, nn.Sequential)
                                               else [block.pool])
        for j, pool in enumerate(pools):
            if not (isinstance(pool, nn.AvgPool2d) and _size2(pool.kernel_size) == (3, 3)
                    and _size2(pool.stride) == (2, 2) and _size2(pool.padding) == (0, 0) and pool.ceil_mode):
                raise FirecutError(f"cannot export {prefix} as NIR: its pool {pool} is not the 3x3/2 "
                                   "ceil-mode average pool firecut's --pool avg builds")
            # [0, 1] taps, padding 1: output j is input j, j = 0..size, the last one zero
            eye = np.zeros((c, c, 2, 2), np.float32)
            eye[np.arange(c), np.arange(c), 1, 1] = 1.0
            extended = self.add(f"{prefix}.pool{j}.extend", nir.Conv2d(
                input_shape=(size, size), weight=eye, stride=1, padding=1, dilation=1, groups=1,
                bias=np.zeros(c, np.float32)), tails)
            cells = window_cells(size)
            summed = self.add(f"{prefix}.pool{j}", nir.SumPool2d(
                kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([0, 0])), [extended])
            size = len(cells)
            divisor = np.broadcast_to(np.outer(cells, cells), (c, size, size)).astype(np.float32)
            tails = [self.add(f"{prefix}.pool{j}.mean", nir.Scale(1.0 / divisor), [summed])]
        lif: UnrolledLIF = block.act
        thr = lif.threshold.detach().float().numpy().reshape(-1)
        per_channel = thr.reshape(-1, 1, 1) if thr.size > 1 else thr
        v_thr = np.broadcast_to(per_channel, (c, size, size)).astype(np.float32)
        zeros = np.zeros((c, size, size), np.float32)
        if lif.beta == 1.0:
            neuron = nir.IF(r=np.ones_like(zeros), v_threshold=v_thr, v_reset=zeros)
        else:
            tau = np.full((c, size, size), 1.0 / (1.0 - lif.beta), np.float32)
            neuron = nir.LIF(tau=tau, r=tau, v_leak=zeros, v_threshold=v_thr, v_reset=zeros)
        name = self.add(f"{prefix}.act", neuron, tails)
        amp = np.broadcast_to(thr, (c,)).astype(np.float64) if lif.scale_output else np.ones(c)
        return [_Source(name, 0, c, amp)], size


def nir_graph(graph: nn.Module, image_size: int, meta: dict[str, Any]):
    """The unrolled SpikingNet `graph` (BN folded; firecut.export.unrolled) as a nir.NIRGraph."""
    from firecut.models.squeezenet import Fire

    nir = _nir()
    if not isinstance(graph, UnrolledNet):
        raise FirecutError("NIR holds spiking nets; this one is a CNN")
    net, b = graph.net, _Builder(nir)
    chans = net.features.stem.conv.in_channels
    b.add("input", nir.Input(input_type={"input": np.array([chans, image_size, image_size])}), [])
    sources, size = [_Source("input", 0, chans, np.ones(chans))], image_size
    for name, block in net.features.named_children():
        if isinstance(block, Fire):
            squeezed, size = b.block(f"{name}.squeeze", block.squeeze, sources, size)
            e1, out_size = b.block(f"{name}.expand1x1", block.expand1x1, squeezed, size)
            e3, _ = b.block(f"{name}.expand3x3", block.expand3x3, squeezed, size)
            n1 = block.expand1x1.conv.out_channels
            sources = [e1[0], _Source(e3[0].node, n1, n1 + e3[0].hi, e3[0].amp)]
            size = out_size
        else:
            sources, size = b.block(name, block, sources, size)
    k = net.classifier.conv.out_channels
    logits = b.convs("classifier", net.classifier.conv, sources, size)
    pooled = b.add("pool", nir.AvgPool2d(kernel_size=np.array([size, size]), stride=np.array([size, size]),
                                         padding=np.array([0, 0])), logits)
    b.add("output", nir.Output(output_type={"output": np.array([k, 1, 1])}), [pooled])
    about = {NIR_KEY: json.dumps(meta), "dt": 1.0, "timesteps": graph.timesteps,
             "readout": "scores = the output averaged over the timesteps; the input is the normalised "
                        "image, the same at every step"}
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=about)



def nir_bytes(graph: nn.Module, image_size: int, meta: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    _nir().write(buf, nir_graph(graph, image_size, meta))
    return buf.getvalue()


# ------------------------------------------------------------------ running a NIR graph
class _Neuron(nn.Module):
    """One step of an IF (leak 0) or LIF node, dt = 1, state = the membrane."""

    def __init__(self, r, v_threshold, v_reset, tau=None):
        super().__init__()
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        self.register_buffer("r", t(r))
        self.register_buffer("thr", t(v_threshold))
        self.register_buffer("v_reset", t(v_reset))
        self.register_buffer("inv_tau", None if tau is None else 1.0 / t(tau))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.r * x if self.inv_tau is None else v + (self.r * x - v) * self.inv_tau
        z = (v > self.thr).to(x.dtype)
        return z, torch.where(z.bool(), self.v_reset.expand_as(v), v)


def _conv(node) -> nn.Conv2d:
    """nir.Conv2d as torch (nirtorch 2.6's own map builds it with in and out channels swapped,
    which only a grouped conv notices)."""
    w = torch.as_tensor(np.asarray(node.weight, np.float32))  # (C_out, C_in/g, kh, kw)
    conv = nn.Conv2d(w.shape[1] * node.groups, w.shape[0], tuple(w.shape[2:]), stride=node.stride,
                     padding=node.padding, dilation=node.dilation, groups=node.groups)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(torch.as_tensor(np.asarray(node.bias, np.float32)))
    return conv


class _Scale(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, np.float32)))

    def forward(self, x):
        return x * self.scale


def runner(graph, timesteps: int) -> Callable[[np.ndarray], np.ndarray]:
    """Scores (N, K) of a NIR graph on images (N, 3, H, W): nirtorch's executor, T steps, the mean
    of the output over the steps."""
    try:
        import nirtorch
    except ImportError as e:
        raise FirecutError(f"running NIR needs nirtorch ({e}); pip install nirtorch") from None
    nir = _nir()
    node_map = {nir.IF: lambda n: _Neuron(n.r, n.v_threshold, n.v_reset),
                nir.LIF: lambda n: _Neuron(n.r, n.v_threshold, n.v_reset, n.tau),
                nir.Scale: lambda n: _Scale(n.scale), nir.Conv2d: _conv}
    module = nirtorch.nir_to_torch(graph, node_map=node_map).eval()

    def run(x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        state, total = None, 0.0
        with torch.no_grad():
            for _ in range(timesteps):
                out, state = module(xt, state)
                total = total + out
        return (total / timesteps).reshape(len(x), -1).numpy()

    return run


def read_nir(path) -> tuple[Any, dict[str, Any]]:
    """(graph, firecut metadata dict) of a NIR file; FirecutError if it is not one firecut wrote."""
    nir = _nir()
    try:
        graph = nir.read(str(path))
    except Exception as e:
        raise FirecutError(f"{path} is not a NIR graph nir can read ({e.__class__.__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''}); give a file written "
                           "by `firecut export --format nir`") from None
    raw = (graph.metadata or {}).get(NIR_KEY)
    if raw is None:
        raise FirecutError(f"{path} is a NIR graph without firecut's metadata (not one firecut wrote)")
    try:
        return graph, json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except json.JSONDecodeError:
        raise FirecutError(f"{path}: its firecut metadata is not JSON") from None
