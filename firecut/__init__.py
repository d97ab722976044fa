"""firecut: spiking SqueezeNet, Fire-module pruning and accuracy-energy benchmarks.

Importing this package is cheap (no torch); the library lives in its submodules:
`firecut.config`, `firecut.data`, `firecut.models`, `firecut.spiking`, `firecut.energy`,
`firecut.training`. `firecut.load(path)` rebuilds the model of a `firecut export --format pt` file
(imported on first use).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load":  # lazy: `import firecut` stays free of torch
        from firecut.export.artifact import load

        return load
    raise AttributeError(f"module 'firecut' has no attribute '{name}'")
