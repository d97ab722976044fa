"""Hardware-aware energy (opt-in, `--energy-model hardware`): synaptic operations, plus neuron
updates, pooling and memory traffic. The costs and their sources are in docs/energy.md.

The paper's model (count.EnergyModel) prices synaptic operations only: E = AC e_AC + MAC e_MAC.
Hardware that runs either net also updates neuron state and moves weights, membranes and
activations through memory, and on neuromorphic chips that dominates (Lemaire et al., ICONIP
2022, whose accounting this follows). Per image, summed over the T steps, with e_add = e_AC,
e_mult = e_MAC - e_AC from the energy preset and e_w, e_s the memory cost per bit:

  synaptic  AC e_add + MAC (e_mult + e_add)                                  (the paper's terms)
  weights   AC w e_w                 an event-driven layer fetches one weight per synaptic event
            + W P w e_w              a dense layer fetches its W weights once per pass (P passes)
  inputs    R b_in e_s               every input element a layer reads (a spike: 1 bit)
  neuron    SNN, per neuron-step:  [beta < 1] e_mult + 2 e_add   (leak, integrate, compare)
                                   + 2 v e_s + 1 e_s             (membrane read + write, spike written)
                 per spike:        e_add for a subtract reset    (reset to zero: a write, no add)
            CNN, per activation:   e_add + a e_s                 (the clip/ReLU compare, written;
                                                            after the pool, as the SNN's neurons)
  pool      per output and pass (CNN) or step (SNN): (k - 1) e_add       (k inputs per window:
                                                            compares, or a mean's adds)
            a gated max-pool (SNN), per input and step: e_add + 2 v e_s  (its running sum,
                                                            updated, read and written)

w, v, a: bits of a weight, a membrane, an activation (a clip-quant net with L levels: ceil(log2(L+1))
at integer presets). e_w and e_s come from the size of the memory that holds the data: every
weight (w bits each); every membrane (an SNN keeps all of them across steps) or, for a CNN, the
largest layer's input and output (two buffers, layer by layer); the gated max-pools' running
sums sit beside the membranes. Batch norm (folded into the convs) is not charged, nor pooling
done outside a pooling module (a functional mean). A row of summary.json's `layers` carries its
terms in `energy_terms_pj`; under this model the pooling modules get rows too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from firecut.activations import ClipQuant
from firecut.energy.count import EnergyModel
from firecut.errors import FirecutError

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm: one 64-bit read, pJ, by memory size.
SRAM_64BIT_PJ = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
DRAM_64BIT_PJ = 1300.0  # 1.3-2.6 nJ per 64 bits; the lower end
# bits of (weight, membrane, activation) per arithmetic preset; activation None: the net's own
BITS = {"45nm-fp32": (32, 32, 32), "45nm-fp16": (16, 16, 16),
        "45nm-int32": (32, 32, 32), "45nm-int8": (8, 16, None)}
ENERGY_MODELS = ("paper", "hardware")  # or the path of a YAML file of HardwareModel fields


def memory_pj_per_bit(size_bytes: float) -> float:
    """Cost of reading (or writing) one bit from a memory of `size_bytes` (Horowitz 2014)."""
    for limit, pj in SRAM_64BIT_PJ:
        if size_bytes <= limit:
            return pj / 64
    return DRAM_64BIT_PJ / 64


@dataclass(frozen=True)
class HardwareModel(EnergyModel):
    weight_bits: int | None = None  # None: from the preset (BITS)
    membrane_bits: int | None = None
    activation_bits: int | None = None  # None: the preset's, or the clip-quant net's levels
    input_bits: int = 8  # the image's pixels
    weight_pj_per_bit: float | None = None  # None: from the weight memory's size
    state_pj_per_bit: float | None = None  # None: from the membrane/activation memory's size

    def bits(self) -> tuple[int, int, int | None]:
        w, v, a = BITS.get(self.name.split("+")[0], BITS["45nm-fp32"])
        pick = lambda given, preset: preset if given is None else given  # noqa: E731
        return pick(self.weight_bits, w), pick(self.membrane_bits, v), pick(self.activation_bits, a)

    def finish(self, report: dict, counter) -> dict:
        """Re-price a count report (count.OpCounter.report): per-layer terms, totals in mJ."""
        layers, n = counter.layers, counter.images
        recs = [layers[row["name"]] for row in report["layers"]]
        spiking = any(r.type == "LIF" for r in recs)
        w_bits, v_bits, a_bits = self.bits()
        if a_bits is None:  # integer preset: a clip-quant CNN's activations need ceil(log2(L+1)) bits
            levels = [m.levels for m in counter.model.modules() if isinstance(m, ClipQuant)]
            a_bits = max(math.ceil(math.log2(L + 1)) for L in levels) if levels else 8
        weight_bytes = sum(r.weights for r in recs) * w_bits / 8
        if spiking:
            steps = counter.T * n
            kept = sum(r.elements for r in recs if r.type == "LIF")  # membranes, x steps
            kept += sum(p.elements for p in counter.pools.values() if p.type == "SpikingMaxPool2d")
            state_bytes = kept / steps * v_bits / 8  # + the gated pools' running sums
        else:
            state_bytes = max(((r.reads * (self.input_bits if r.image else a_bits) + r.outputs * a_bits)
                               / max(r.passes, 1) / 8 for r in recs if r.type != "LIF"), default=0.0)
        e_w, e_s = self.weight_pj_per_bit, self.state_pj_per_bit
        e_w = memory_pj_per_bit(weight_bytes) if e_w is None else e_w
        e_s = memory_pj_per_bit(state_bytes) if e_s is None else e_s
        e_add, e_mult = self.e_ac_pj, self.e_mac_pj - self.e_ac_pj
        totals: dict[str, float] = {}
        for row, r in zip(report["layers"], recs, strict=True):
            terms = {"synaptic": 0.0, "weights": 0.0, "inputs": 0.0, "neuron": 0.0, "state": 0.0}
            if r.type == "LIF":
                leak = e_mult if r.beta < 1 else 0.0
                terms["neuron"] = (r.elements * (leak + 2 * e_add)
                                   + (r.nonzero * e_add if r.reset == "subtract" else 0.0)) / n
                terms["state"] = r.elements * (2 * v_bits + 1) * e_s / n
            else:
                spikes = r.kinds == {"spike"}
                in_bits = 1 if spikes else (self.input_bits if r.image else a_bits)
                terms["synaptic"] = (r.ac * e_add + r.mac * self.e_mac_pj) / n
                terms["weights"] = (r.ac + r.weights * r.passes) * w_bits * e_w / n
                terms["inputs"] = r.reads * in_bits * e_s / n
                if not spiking:  # the activation after this layer (none after the classifier)
                    terms["neuron"] = r.activations * e_add / n
                    terms["state"] = r.activations * a_bits * e_s / n
            row["energy_terms_pj"] = terms
            row["energy_mj"] = sum(terms.values()) * 1e-9
        for p in counter.pools.values():
            terms = {"pool": p.outputs * (p.window - 1) * e_add / n, "state": 0.0}
            if p.type == "SpikingMaxPool2d":  # running sums: an add per input and step, read + written
                terms["pool"] += p.elements * e_add / n
                terms["state"] = p.elements * 2 * v_bits * e_s / n
            report["layers"].append({"name": p.name, "type": p.type, "input": "", "ac": 0.0, "mac": 0.0,
                                     "energy_mj": sum(terms.values()) * 1e-9, "energy_terms_pj": terms})
        order = {**{r.name: r.order for r in recs}, **{p.name: p.order for p in counter.pools.values()}}
        report["layers"].sort(key=lambda row: order[row["name"]])
        for row in report["layers"]:
            for k, v in row["energy_terms_pj"].items():
                totals[k] = totals.get(k, 0.0) + v
        report["paper_energy_mj"] = report["energy_mj"]
        report["energy_mj"] = sum(totals.values()) * 1e-9
        report["energy_terms_mj"] = {k: v * 1e-9 for k, v in totals.items()}
        report["energy_model"] = {
            "name": "hardware", "weight_bits": w_bits, "membrane_bits": v_bits, "activation_bits": a_bits,
            "input_bits": self.input_bits, "weight_memory_bytes": weight_bytes,
            "state_memory_bytes": state_bytes, "weight_pj_per_bit": e_w, "state_pj_per_bit": e_s}
        return report


def make_energy(preset: str = "45nm-fp32", e_ac_pj: float | None = None, e_mac_pj: float | None = None,
                model: str = "paper") -> EnergyModel:
    """The energy model a run prices with: the paper's (AC/MAC only), or the hardware-aware one,
    whose fields a YAML file (`model` = its path) may set."""
    paper = EnergyModel.from_config(preset, e_ac_pj, e_mac_pj)
    if model == "paper":
        return paper
    if paper.e_mac_pj < paper.e_ac_pj:
        raise FirecutError(f"the hardware energy model prices a multiply as e_MAC - e_AC, so e_MAC "
                           f"({paper.e_mac_pj:g} pJ) must be >= e_AC ({paper.e_ac_pj:g} pJ)")
    hw = HardwareModel(paper.e_ac_pj, paper.e_mac_pj, paper.name)
    if model == "hardware":
        return hw
    path = Path(model)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise FirecutError(f"unknown energy model '{model}'; choose one of: {', '.join(ENERGY_MODELS)}, "
                           "or give the path of a YAML file of hardware costs (docs/energy.md)")
    return replace(hw, **read_costs(path))


def read_costs(path: Path) -> dict:
    """The fields a hardware-cost YAML file sets, checked: known names, numbers >= 0."""
    import yaml

    allowed = {f.name for f in fields(HardwareModel)} - {"e_ac_pj", "e_mac_pj", "name"}
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise FirecutError(f"cannot read the energy model {path}: {e.strerror or e}; give an existing "
                           "YAML file, or --energy-model paper|hardware") from None
    except yaml.YAMLError as e:
        raise FirecutError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix it") from None
    if not isinstance(data, dict):
        raise FirecutError(f"{path} must map cost names to numbers, e.g. 'weight_pj_per_bit: 0.3'")
    for k, v in data.items():
        if k not in allowed:
            raise FirecutError(f"{path}: unknown cost '{k}'; choose from: {', '.join(sorted(allowed))}")
        if k.endswith("_bits"):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FirecutError(f"{path}: {k} must be a whole number of bits >= 1, not {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise FirecutError(f"{path}: {k} must be a finite number >= 0, not {v!r}")
    return data
