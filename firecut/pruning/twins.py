"""Keep masks that build the same network ("twins").

Trained from scratch (the ablation's `recipe` and `scratch`), a pruned SqueezeNet is nothing but
its layers' shapes and pools, in order: which Fire modules they were named after does not enter.
fire2 and fire3 share a plan (squeeze 16, expand 64 + 64), as do fire4/fire5, fire6/fire7 and
fire8/fire9, and a dropped module's pool moves into the last kept block before it. So Head-1
(fire2-5, fire9) and Head-2 (fire2-5, fire8) build one network, as do Tail-1/Tail-2 and
Alt-1/Alt-2; seeded alike they train bit-identically (BENCHMARKS.md, "Table 3 at full scale: each
schedule trained through the recipe"), and the ablation trains each such network once. Pruned
from a trained base (`finetune`, `prune-cnn`) twins differ: they inherit different weights.
"""

from __future__ import annotations

import re

from firecut.config import ModelConfig, SpikingConfig


def architecture_key(mc: ModelConfig, sc: SpikingConfig) -> str:
    """The network `mc`, `sc` build, without its modules' names: its repr with every '(name): '
    removed (layer types, channels, kernels, pools and neurons, in order). Equal keys: the same
    parameters in the same order, so the same initialisation from the same seed."""
    from firecut.network import build_network

    net = build_network(mc, sc, num_classes=10, image_size=32)
    return re.sub(r"\([\w.]+\): ", "", repr(net))
