"""Pruning whole Fire modules: which of fire2..fire9 a SqueezeNet keeps, and how a pruned net
starts from its parent.

    schedules.py  named keep lists (YAML; the paper's Table 3 ships in data/paper.yaml) and the
                  rules that generate them (head, tail, alt, ref)
    masks.py      a keep list as an 8-bit string ('11111111'), as the search handles it
    saliency.py   each module's saliency (a gate's |dL/dg|) and its exact gate-off loss
    inherit.py    a pruned child takes every tensor of its parent whose name and shape fit
"""
