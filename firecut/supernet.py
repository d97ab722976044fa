"""A weight-sharing spiking SqueezeNet that holds all 256 keep masks at once.

    shared    the stem, each Fire module's expand convs (with their BN and neurons) and every
              tensor of the base SNN it is built from
    branches  a squeeze conv (or the classifier) sees a different input width for each earlier
              module that can be the last one kept before it (DESIGN §2: the next kept module
              takes the channels that arrive). It holds one branch per possible width, keyed by
              that width; the branch for the width the base had is the base's own conv, the
              others start as a pruned child's re-made conv would (fresh conv, inherited BN and
              neurons). Keying by width is the same rule as pruning by inheritance (by shape).
              (Keying by source block instead, a branch per re-wiring, was measured worse: 44
              branches share the same few hundred steps; BENCHMARKS.md.)
    skips     one more branch where an earlier module has the width the base's own input had
              (fire3 -> fire4 is 128 wide, and so is fire2 -> fire4 once fire3 is dropped): the
              width's own conv serves the base's wiring, and `skip<width>`, a copy of it that
              learns, serves every mask that skips a same-width module. Without it those masks
              ran the base's frozen conv on inputs it never saw and ranked 152nd-255th, though
              they fine-tune to 32-52% (BENCHMARKS.md).
    pools     as in a pruned net, each max-pool sits in the last kept block at or before its
              position (`pool_plan`); pools carry no weights, so the supernet places them per mask
    path      set_mask(bits) picks one mask; forward then runs exactly the network that
              `subnet(bits)` builds standalone (a test holds them equal)
    walk      all 256 paths at once: a depth-first walk over keep/drop decisions computes each
              shared prefix once. Masks differ only after their first differing decision, so the
              walk runs 2^i evaluations of fire(i+2): 255 Fire evaluations, most of them on the
              cheap 4x4 maps, instead of ~1,000 for 256 separate forwards.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from firecut.models.squeezenet import (FIRE_NAMES, POOL_AFTER, fire_plan, make_pool, pool_plan,
                                       stem_channels)
from firecut.energy import accumulates_from_map, nonzero_map
from firecut.masks import keep_of
from firecut.spiking import SpikingMaxPool2d, SpikingNet


BRANCHES = "width+skip"  # in search signatures: a supernet built with other branches is not resumed


class SuperFire(nn.Module):
    """squeeze[key] 1x1 -> (expand 1x1 || expand 3x3): one squeeze branch per input width and,
    where an earlier module has the own input's width, a skip branch (`branch_key`)."""

    def __init__(self, squeeze: dict[str, nn.Module], expand1x1: nn.Module, expand3x3: nn.Module,
                 out_channels: int):
        super().__init__()
        self.squeeze = nn.ModuleDict(squeeze)
        self.expand1x1, self.expand3x3 = expand1x1, expand3x3
        self.out_channels = out_channels


def branch_key(c: int, src: int, own: int, keys) -> str:
    """The branch that reads width c from source block src (0 the stem, k the k-th Fire module)
    in the place whose base input came from block own: `skip<c>` if it has one and src is not
    own, else the width's own."""
    return f"skip{c}" if src != own and f"skip{c}" in keys else str(c)


class SuperSqueezeNet(nn.Module):
    """(T*B or B rows, 3, H, W) -> (T*B, K) for the mask of `set_mask`; wrap in SpikingNet."""

    def __init__(self, stem: nn.Module, fires: dict[str, SuperFire], heads: dict[str, nn.Module],
                 timesteps: int):
        super().__init__()
        self.stem = stem
        self.fires = nn.ModuleDict(fires)
        self.heads = nn.ModuleDict(heads)  # keyed as SuperFire.squeeze
        self.stem_pool = make_pool()  # before the first neuron: static input
        self.spike_pool = SpikingMaxPool2d(make_pool(), timesteps)  # after it: gated by running sums
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.stem_width = stem.conv.out_channels
        self.bits = "1" * len(FIRE_NAMES)
        self.fresh: set[str] = set()  # branch names that did not come from the base (see below)

    def set_mask(self, bits: str) -> None:
        keep_of(bits)  # 8 characters of 0/1, or a ValueError
        self.bits = bits

    def path(self, bits: str) -> list[str]:
        """The branches mask `bits` runs through: its squeeze convs' and its classifier's names."""
        keep_of(bits)  # 8 characters of 0/1, or a ValueError
        names, c, src = [], self.stem_width, 0
        for i, ch in enumerate(bits):
            if ch == "1":
                fire = self.fires[FIRE_NAMES[i]]
                names.append(f"fires.{FIRE_NAMES[i]}.squeeze.{branch_key(c, src, i, fire.squeeze)}")
                c, src = fire.out_channels, i + 1
        return [*names, f"heads.{self._head_key(c, src)}"]

    def _head_key(self, c: int, src: int) -> str:
        return branch_key(c, src, len(FIRE_NAMES), self.heads)

    def _readout(self, h: torch.Tensor, head: nn.Module) -> torch.Tensor:
        return self.gap(head(h)).flatten(1)  # (T*B, K)

    def _open_stem(self, x: torch.Tensor) -> "_Open":
        return _Open(self, [self.stem], [self.stem.bn(self.stem.conv(x))], static=True)

    def _open_fire(self, fire: SuperFire, s: torch.Tensor) -> "_Open":
        """The fire's expand blocks on squeeze output s, their pools still to come."""
        blocks = [fire.expand1x1, fire.expand3x3]  # squeeze blocks never hold pools
        return _Open(self, blocks, [b.bn(b.conv(s)) for b in blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W): encode once
        keep = keep_of(self.bits)
        pools = pool_plan(keep)
        *squeezes, head = self.path(self.bits)
        h = self._open_stem(x).out(pools["stem"])  # (T*B, 64, H', W')
        for name, branch in zip(keep, squeezes, strict=True):
            fire = self.fires[name]
            h = self._open_fire(fire, self.get_submodule(branch)(h)).out(pools[name])
        return self._readout(h, self.get_submodule(head))

    # ---------------------------------------------------------------- all masks at once

    def walk(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(bits, (T*B, K) readout, accumulates) for all 256 masks: the readout of
        set_mask(bits); forward(x), and the AC its spiking convs do on this batch (summed over
        T*B rows; every conv after the stem reads spikes, so the stem's MACs are all its MACs)."""
        zero = torch.zeros((), dtype=torch.float64, device=x.device)
        yield from self._walk(0, "", self._open_stem(x), int("stem" in POOL_AFTER), self.stem_width, 0, zero)

    def _walk(self, i: int, bits: str, last: "_Open", pools: int, c: int, src: int, ac: torch.Tensor):
        """Masks starting with `bits`; `last` is block `src` (0 the stem, k fire k), c wide."""
        if i == len(FIRE_NAMES):
            head = self.heads[self._head_key(c, src)]
            head_ac = accumulates_from_map(last.nonzero(pools), head.conv)
            yield bits, self._readout(last.out(pools), head), ac + head_ac
            return
        name = FIRE_NAMES[i]
        here = int(name in POOL_AFTER)  # the pool at this position, if any
        # drop: the pool here falls to the last kept block
        yield from self._walk(i + 1, bits + "0", last, pools + here, c, src, ac)
        # keep: the last kept block is complete now; this module opens
        fire = self.fires[name]
        squeeze = fire.squeeze[branch_key(c, src, i, fire.squeeze)]
        s = squeeze(last.out(pools))
        nz_s = nonzero_map(s)
        ac = ac + accumulates_from_map(last.nonzero(pools), squeeze.conv) + sum(
            accumulates_from_map(nz_s, b.conv) for b in (fire.expand1x1, fire.expand3x3))
        yield from self._walk(i + 1, bits + "1", self._open_fire(fire, s), here, fire.out_channels, i + 1, ac)


class _Open:
    """A block whose pre-activations are computed and whose pools are not known yet: each pool
    count's output is computed once (and its nonzero map, for counting, when asked), and the
    pooled pre-activations of one count are the start of the next. `forward` runs one count
    through it, the walk several."""

    def __init__(self, net: SuperSqueezeNet, blocks: list[nn.Module], pre: list[torch.Tensor],
                 static: bool = False):
        self.net, self.blocks, self.static = net, blocks, static
        self.pooled = [pre]  # [k]: the pre-activations after k pools
        self.done: dict[int, torch.Tensor] = {}
        self.nonzeros: dict[int, torch.Tensor] = {}

    def out(self, pools: int) -> torch.Tensor:
        """conv -> BN -> `pools` max-pools -> neuron, of every block, concatenated."""
        if pools not in self.done:
            pool = self.net.stem_pool if self.static else self.net.spike_pool
            while len(self.pooled) <= pools:
                self.pooled.append([pool(p) for p in self.pooled[-1]])  # (N, C, H/2, W/2)
            outs = [b.act(p) for b, p in zip(self.blocks, self.pooled[pools], strict=True)]
            self.done[pools] = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return self.done[pools]

    def nonzero(self, pools: int) -> torch.Tensor:
        if pools not in self.nonzeros:
            self.nonzeros[pools] = nonzero_map(self.out(pools))
        return self.nonzeros[pools]


# ------------------------------------------------------------------------------ building


def _child(mc, sc, num_classes: int, image_size: int, keep: tuple[str, ...], state) -> nn.Module:
    """A pruned spiking SqueezeNet keeping `keep`, inheriting every fitting tensor of `state`."""
    from firecut.network import build_network
    from firecut.prune import inherit

    net = build_network(dataclasses.replace(mc, keep=list(keep), parent=None), sc, num_classes,
                        image_size)
    inherit(net, state)
    return net.net


def _sources(width: float) -> list[tuple[str | None, int]]:
    """(module, output width) of each block a later module can receive from: stem, fire2..9."""
    return [(None, stem_channels(width))] + [(f.name, f.expand1x1 + f.expand3x3)
                                             for f in fire_plan(width)]


def _skip(branches: dict[str, nn.Module], sources: list[tuple[str | None, int]]) -> dict[str, nn.Module]:
    """{skip<c>: a copy of the base's own branch} where an earlier source has the own width c
    (the own source is the last of `sources`); a pruned child inherits that conv by shape too."""
    c = sources[-1][1]
    return {f"skip{c}": copy.deepcopy(branches[str(c)])} if any(w == c for _, w in sources[:-1]) else {}


def build_supernet(base: dict[str, Any]) -> SpikingNet:
    """A SpikingNet around a SuperSqueezeNet, from an unpruned spiking SqueezeNet checkpoint."""
    from firecut.checkpoint import configs_of

    mc, sc = configs_of(base)
    num_classes, image_size = base["arch"]["num_classes"], base["arch"]["image_size"]
    state = base["state_dict"]
    child = lambda keep: _child(mc, sc, num_classes, image_size, keep, state)  # noqa: E731
    full = child(FIRE_NAMES)
    sources = _sources(mc.width)
    fires = {}
    for i, spec in enumerate(fire_plan(mc.width)):
        squeeze = {}
        for src, c in sources[: i + 1]:  # the stem or any earlier module can be the last kept
            if str(c) not in squeeze:
                own = getattr(full.features, spec.name) if c == sources[i][1] else child(
                    tuple(m for m in (src, spec.name) if m)).features._modules[spec.name]
                squeeze[str(c)] = own.squeeze
        squeeze.update(_skip(squeeze, sources[: i + 1]))
        block = getattr(full.features, spec.name)
        fires[spec.name] = SuperFire(squeeze, block.expand1x1, block.expand3x3, block.out_channels)
    heads = {}
    for src, c in sources:
        if str(c) not in heads:  # the base's own classifier for the width it had
            is_own = c == sources[-1][1]
            heads[str(c)] = full.classifier if is_own else child((src,) if src else ()).classifier
    heads.update(_skip(heads, sources))
    for m in [full.features.stem, *(f for s in fires.values() for f in s.modules())]:
        if hasattr(m, "pool"):
            m.pool = None  # the supernet places pools per mask
    net = SuperSqueezeNet(full.features.stem, fires, heads, sc.timesteps)
    own = {id(m) for m in full.modules()}  # the base's own modules; the rest were re-made
    branches = [(f"fires.{n}.squeeze.{c}", m) for n, f in fires.items() for c, m in f.squeeze.items()]
    branches += [(f"heads.{c}", m) for c, m in net.heads.items()]
    net.fresh = {name for name, m in branches if id(m) not in own}
    return SpikingNet(net, sc.timesteps)


def fresh_parameters(supernet: SpikingNet) -> set[int]:
    """ids of the parameters of branches the base did not have (re-made convs and classifiers,
    with the BN and neurons they inherited): the rest is the base's own trained tensors."""
    sup: SuperSqueezeNet = supernet.net
    return {id(p) for name in sup.fresh for p in sup.get_submodule(name).parameters()}


def subnet_state(supernet: SpikingNet, bits: str) -> dict[str, torch.Tensor]:
    """The supernet's tensors under a standalone pruned SpikingNet's names, for mask `bits`."""
    sup: SuperSqueezeNet = supernet.net
    keep = keep_of(bits)
    out = {f"net.features.stem.{k}": v for k, v in sup.stem.state_dict().items()}
    *squeezes, head = sup.path(bits)
    for name, branch in zip(keep, squeezes, strict=True):
        fire = sup.fires[name]
        for part, mod in (("squeeze", sup.get_submodule(branch)), ("expand1x1", fire.expand1x1),
                          ("expand3x3", fire.expand3x3)):
            out.update({f"net.features.{name}.{part}.{k}": v for k, v in mod.state_dict().items()})
    out.update({f"net.classifier.{k}": v for k, v in sup.get_submodule(head).state_dict().items()})
    return out


def subnet(supernet: SpikingNet, base: dict[str, Any], bits: str) -> SpikingNet:
    """The standalone pruned SNN for `bits`, holding the supernet's weights."""
    from firecut.checkpoint import configs_of
    from firecut.network import build_network

    mc, sc = configs_of(base)
    net = build_network(dataclasses.replace(mc, keep=list(keep_of(bits)), parent=None), sc,
                        base["arch"]["num_classes"], base["arch"]["image_size"])
    net.load_state_dict(subnet_state(supernet, bits))
    return net.to(next(supernet.parameters()).device)


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode, except that batch norm normalises with each batch's own statistics (and leaves
    its running statistics as they were): a shared BN's running statistics mix all masks."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum, m.num_batches_tracked.clone()) for m in bns]
    was = model.training
    model.eval()
    for m in bns:
        m.train()
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        model.train(was)
        for m, (training, momentum, tracked) in zip(bns, saved, strict=True):
            m.train(training)
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b)) over pairs."""
    n = len(a)
    conc = disc = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            ties_a += da == 0
            ties_b += db == 0
            if da * db > 0:
                conc += 1
            elif da * db < 0:
                disc += 1
    n0 = n * (n - 1) // 2
    denom = ((n0 - ties_a) * (n0 - ties_b)) ** 0.5
    return (conc - disc) / denom if denom else 0.0
