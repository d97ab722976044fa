"""NIR export: a spiking SqueezeNet as a graph a neuromorphic toolchain reads (the `nir` package).

NIR (Pedersen et al., Nature Communications 2024) holds Conv2d (with groups and bias), IF and LIF
neurons that reset to a fixed potential, AvgPool2d, Scale, and sums every edge that ends in a
node. It has no max-pool, concatenation, batch norm, subtract reset or initial membrane. So:

  batch norm       folded into the convs (the unrolled graph, firecut.export.unrolled)
  spike amplitude  firecut's neurons emit theta_c per spike; theta folds into the columns of the
                   conv that reads them: W'[:, c] = W[:, c] * theta_c
  concatenation    a Fire module's expand1x1 and expand3x3 become one 3x3 conv (the 1x1 kernel
                   at the centre) and one neuron node over both: the next conv reads one node,
                   and the graph is a chain with no fan-in (norse's NIR import executes none)
  3x3/2 ceil pool  (the average pool of `--pool avg`) NIR's pools have no ceil mode, so a 2x2
                   identity conv with taps [0, 1] and padding 1 extends the map by one zero row
                   and column (size -> size + 1), a SumPool2d 3x3/2 sums each window 2i..2i+2,
                   and a Scale node divides by the window's cells inside the image (9, 6 or 4),
                   so every neuron keeps r = 1 (IF) or r = tau (LIF). A depthwise conv
                   would be smaller, but nir 1.0.8 types a grouped conv's input by its weight's
                   second dimension and refuses the graph
  2x2/2 pool       (`--pool avg2`) a Conv2d node, 2x2 stride 2, weight 1/4 on the diagonal
                   (channel c to channel c): consumers map Conv2d where they map no pool
                   (norse has no AvgPool2d, snntorch no SumPool2d)
  global pool      the same: a Conv2d node whose kernel is the whole map, 1/(H W) on the
                   diagonal; the Output node is (K, 1, 1) per step, and the scores are its mean
                   over the T steps, as SpikingNet's readout
  thresholds       one per layer, as consumers that take one need (snntorch): channel c's
                   incoming weights and bias are divided by theta_c, so its membrane is
                   v / theta_c and it fires when v / theta_c > 1, as before

Neurons: NIR's LIF is continuous-time, tau dv/dt = v_leak - v + r I, and a graph carries no time
step. firecut's neurons are one forward-Euler step per time step; the graph is written for a step
of dt = DT = 1e-4 s, the one snntorch's NIR import assumes (other consumers take dt as a
parameter: the metadata's `dt`, with `timesteps` and `readout`). Every neuron is a LIF node with
v_leak = 0, r = 1 (norse ignores r), v_reset = 0 and
  tau = dt / (1 - beta), v_threshold = k = dt / tau:
       v += k (I - v), i.e. v = beta v + k I: the membrane is k times firecut's (normalised)
       one, and crosses k when firecut's crosses 1. snntorch rescales the threshold by
       r dt / tau = k back to 1 and runs v = beta v + I, firecut's neuron exactly
  IF   (beta = 1) the same node with tau = IF_TAU = 1e4 s: a leak of k = 1e-8 per step, below
       float32's resolution (1 - 1e-8 rounds to 1), so it integrates exactly. NIR's own IF
       node would need r = 1 / dt, which snntorch refuses, and snntorch maps IF nodes to a leaky
       neuron (beta 0.9, subtract reset): a consumer's error, pinned in tests/test_nir_consumers.py
Files written before (dt = 1 in their metadata, IF nodes, per-channel thresholds) still run.
The image enters as it reaches the stem conv, normalised ((pixel/255 - mean)/std, the metadata's
mean and std), at every step; the scores are the Output's currents averaged over T, not spikes.
A net with max-pools, subtract reset or a nonzero initial membrane is refused, naming each lack.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from firecut.errors import FirecutError
from firecut.export.unrolled import UnrolledLIF, UnrolledNet

NIR_KEY = "firecut"  # the graph's metadata entry holding ArtifactMeta as JSON
DT = 1e-4  # s per time step the graph's time constants are written for (snntorch's fixed dt)
IF_TAU = 1e4  # s: an integrate-and-fire neuron's tau (leak dt / tau = 1e-8 per step)


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
    node: str  # a neuron (or the input) whose spikes a conv reads
    amp: np.ndarray  # (C,) value of one spike per channel (1 for the image)


def _size2(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def window_cells(size: int) -> np.ndarray:
    """(ceil((size-3)/2) + 1,) cells of each 3x3/2 ceil-mode window inside a map of `size`."""
    starts = np.arange(0, size - 1, 2)[: (size - 3 + 1) // 2 + 1]
    return (np.minimum(starts + 3, size) - starts).astype(np.float32)


def lif_tau(beta: float) -> np.float32:
    """tau (s) of a LIF node that decays by `beta` per step of DT: DT / (1 - beta), IF_TAU for
    beta = 1; nudged by float32 ulps until a consumer's float32 1 - DT / tau is beta's float32
    (snntorch computes it so; a beta one ulp off flips spikes at the threshold)."""
    if beta == 1.0:
        return np.float32(IF_TAU)
    want, tau = np.float32(beta), np.float32(DT / (1.0 - beta))
    for _ in range(64):
        got = np.float32(1) - np.float32(DT) / tau
        if got == want:
            break
        tau = np.nextafter(tau, np.float32(np.inf) if got < want else np.float32(0))
    return tau


def merged_expand(fire: nn.Module) -> SimpleNamespace:
    """A Fire module's expand1x1 and expand3x3 blocks (BN folded) as one block: a 3x3 conv whose
    first n1 output channels are the 1x1 conv at the kernel's centre, then the 3x3 conv; the same
    pools; one neuron layer over both, thresholds side by side. Its output is the concatenation,
    so the next conv reads one node: no fan-in, which norse's NIR import cannot execute."""
    e1, e3 = fire.expand1x1, fire.expand3x3
    if (e1.act.beta, e1.act.scale_output) != (e3.act.beta, e3.act.scale_output):
        raise FirecutError("cannot export a Fire module whose two expand layers have different neurons "
                           "as NIR")
    w1, w3 = e1.conv.weight.detach(), e3.conv.weight.detach()  # (n1, C, 1, 1), (n3, C, 3, 3)
    n1, n3 = w1.shape[0], w3.shape[0]
    conv = nn.Conv2d(w1.shape[1], n1 + n3, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:n1, :, 1, 1] = w1[:, :, 0, 0]
        conv.weight[n1:] = w3
        zero = lambda c, n: c.bias.detach() if c.bias is not None else torch.zeros(n)  # noqa: E731
        conv.bias.copy_(torch.cat([zero(e1.conv, n1), zero(e3.conv, n3)]))
    thr = torch.cat([e1.act.threshold.detach().reshape(-1).expand(n1),
                     e3.act.threshold.detach().reshape(-1).expand(n3)])
    act = SimpleNamespace(threshold=thr, beta=e1.act.beta, scale_output=e1.act.scale_output)
    return SimpleNamespace(conv=conv, pool=e1.pool, act=act)


class _Builder:
    def __init__(self, nir):
        self.nir, self.nodes, self.edges = nir, {}, []

    def add(self, name: str, node, inputs: list[str]) -> str:
        self.nodes[name] = node
        self.edges += [(i, name) for i in inputs]
        return name

    def conv(self, prefix: str, conv: nn.Conv2d, source: _Source, size: int,
             rows: np.ndarray | None = None) -> str:
        """The conv as a NIR node, its columns scaled by the source's spike amplitude and its rows
        (output channels: weights and bias) by `rows` (1 / the threshold of the neurons it feeds)."""
        w = conv.weight.detach().double().numpy()  # (C_out, C_in/g, k, k)
        b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(w.shape[0])
        if rows is not None:
            w, b = w * rows.reshape(-1, 1, 1, 1), b * rows
        w = w * source.amp.reshape(1, -1, 1, 1)
        node = self.nir.Conv2d(input_shape=(size, size), weight=w.astype(np.float32), stride=conv.stride,
                               padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                               bias=b.astype(np.float32))
        return self.add(f"{prefix}.conv", node, [source.node])

    def mean_conv(self, c: int, k: int, size: int):
        """A k x k, stride k average pool over c channels as a Conv2d node (1/k^2 on the diagonal)."""
        w = np.zeros((c, c, k, k), np.float32)
        w[np.arange(c), np.arange(c)] = 1.0 / (k * k)
        return self.nir.Conv2d(input_shape=(size, size), weight=w, stride=k, padding=0, dilation=1,
                               groups=1, bias=np.zeros(c, np.float32))

    def block(self, prefix: str, block, source: _Source, size: int) -> tuple[_Source, int]:
        """conv (BN folded) -> [average pools] -> neuron; returns its output and size."""
        nir = self.nir
        c = block.conv.out_channels
        lif = block.act
        thr = np.broadcast_to(lif.threshold.detach().double().numpy().reshape(-1), (c,))
        tail = self.conv(prefix, block.conv, source, size, rows=1.0 / thr)
        # in order; add_pool nests Sequentials when three pools stack (no Fire module kept)
        pools = [] if block.pool is None else [m for m in block.pool.modules()
                                               if not isinstance(m, nn.Sequential)]
        for j, pool in enumerate(pools):
            if (isinstance(pool, nn.AvgPool2d) and _size2(pool.kernel_size) == (2, 2)
                    and _size2(pool.stride) == (2, 2) and _size2(pool.padding) == (0, 0)):
                tail = self.add(f"{prefix}.pool{j}", self.mean_conv(c, 2, size), [tail])
                size //= 2
                continue
            if not (isinstance(pool, nn.AvgPool2d) and _size2(pool.kernel_size) == (3, 3)
                    and _size2(pool.stride) == (2, 2) and _size2(pool.padding) == (0, 0) and pool.ceil_mode):
                raise FirecutError(f"cannot export {prefix} as NIR: its pool {pool} is neither of the "
                                   "average pools firecut's --pool avg and avg2 build")
            # [0, 1] taps, padding 1: output j is input j, j = 0..size, the last one zero
            eye = np.zeros((c, c, 2, 2), np.float32)
            eye[np.arange(c), np.arange(c), 1, 1] = 1.0
            extended = self.add(f"{prefix}.pool{j}.extend", nir.Conv2d(
                input_shape=(size, size), weight=eye, stride=1, padding=1, dilation=1, groups=1,
                bias=np.zeros(c, np.float32)), [tail])
            cells = window_cells(size)
            summed = self.add(f"{prefix}.pool{j}", nir.SumPool2d(
                kernel_size=np.array([3, 3]), stride=np.array([2, 2]), padding=np.array([0, 0])), [extended])
            size = len(cells)
            divisor = np.broadcast_to(np.outer(cells, cells), (c, size, size)).astype(np.float32)
            tail = self.add(f"{prefix}.pool{j}.mean", nir.Scale(1.0 / divisor), [summed])
        shape = (c, size, size)
        tau = np.full(shape, lif_tau(lif.beta), np.float32)
        k = np.ones(shape, np.float32) * DT / tau  # float32, as snntorch computes r dt / tau
        neuron = nir.LIF(tau=tau, r=np.ones(shape, np.float32), v_leak=np.zeros(shape, np.float32),
                         v_threshold=k, v_reset=np.zeros(shape, np.float32))
        name = self.add(f"{prefix}.act", neuron, [tail])
        return _Source(name, thr.astype(np.float64) if lif.scale_output else np.ones(c)), size


def nir_graph(graph: nn.Module, image_size: int, meta: dict[str, Any]):
    """The unrolled SpikingNet `graph` (BN folded; firecut.export.unrolled) as a nir.NIRGraph: a
    chain, every node reading one node (Fire modules' expand layers merged: merged_expand)."""
    from firecut.models.squeezenet import Fire

    nir = _nir()
    if not isinstance(graph, UnrolledNet):
        raise FirecutError("NIR holds spiking nets; this one is a CNN")
    net, b = graph.net, _Builder(nir)
    chans = net.features.stem.conv.in_channels
    b.add("input", nir.Input(input_type={"input": np.array([chans, image_size, image_size])}), [])
    source, size = _Source("input", np.ones(chans)), image_size
    for name, block in net.features.named_children():
        if isinstance(block, Fire):
            squeezed, size = b.block(f"{name}.squeeze", block.squeeze, source, size)
            source, size = b.block(f"{name}.expand", merged_expand(block), squeezed, size)
        else:
            source, size = b.block(name, block, source, size)
    k = net.classifier.conv.out_channels
    logits = b.conv("classifier", net.classifier.conv, source, size)
    pooled = b.add("pool", b.mean_conv(k, size, size), [logits])
    b.add("output", nir.Output(output_type={"output": np.array([k, 1, 1])}), [pooled])
    about = {NIR_KEY: json.dumps(meta), "dt": DT, "timesteps": graph.timesteps,
             "readout": "scores = the output averaged over the timesteps; the input is the normalised "
                        "image, the same at every step"}
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=about)


def nir_bytes(graph: nn.Module, image_size: int, meta: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    _nir().write(buf, nir_graph(graph, image_size, meta))
    return buf.getvalue()


# ------------------------------------------------------------------ running a NIR graph
class _Neuron(nn.Module):
    """One forward-Euler step of dt of an IF node (dv/dt = r I) or a LIF node (tau dv/dt =
    v_leak - v + r I), state = the membrane: v += gain I - decay (v - v_leak), with gain = dt r
    (IF) or dt r / tau (LIF) and decay = 0 or dt / tau, each computed once in float64 (r I and v
    apart: with tau = IF_TAU, r I is 1e8 times v)."""

    def __init__(self, r, v_threshold, v_reset, dt: float, tau=None, v_leak=0.0):
        super().__init__()
        t = lambda a: torch.as_tensor(np.asarray(a, np.float64).astype(np.float32))  # noqa: E731
        r = np.asarray(r, np.float64)
        gain, decay = (dt * r, 0.0) if tau is None else (dt * r / np.asarray(tau, np.float64),
                                                          dt / np.asarray(tau, np.float64))
        self.register_buffer("gain", t(gain))
        self.register_buffer("decay", t(decay))
        self.register_buffer("v_leak", t(v_leak))
        self.register_buffer("thr", t(v_threshold))
        self.register_buffer("v_reset", t(v_reset))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.gain * x - self.decay * (v - self.v_leak)
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


def graph_dt(graph) -> float:
    """The time step a firecut graph's constants are written for (1 in files before DT)."""
    return float(np.asarray((graph.metadata or {}).get("dt", 1.0)))


def runner(graph, timesteps: int) -> Callable[[np.ndarray], np.ndarray]:
    """Scores (N, K) of a NIR graph on images (N, 3, H, W): nirtorch's executor, T steps of the
    graph's dt, the mean of the output over the steps."""
    try:
        import nirtorch
    except ImportError as e:
        raise FirecutError(f"running NIR needs nirtorch ({e}); pip install nirtorch") from None
    nir = _nir()
    dt = graph_dt(graph)
    node_map = {nir.IF: lambda n: _Neuron(n.r, n.v_threshold, n.v_reset, dt),
                nir.LIF: lambda n: _Neuron(n.r, n.v_threshold, n.v_reset, dt, n.tau, n.v_leak),
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
