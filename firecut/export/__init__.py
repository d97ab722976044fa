"""Deployable artifacts: a checkpoint exported, verified against its source, and used.

    unrolled.py   the exported graph: BN folded into convs, each LIF unrolled over a fixed T
    artifact.py   pt / TorchScript / ONNX: metadata, writers, readers, `firecut.load`
    verify.py     the check: layer by layer, then scores, predictions and accuracy (McNemar)
    build.py      `firecut export`: build, write, reload, verify, then rename into place
    predict.py    `firecut predict`: image files -> classes and probabilities

Nothing is imported here: `firecut.load` reads a pt file without the export machinery.
"""
