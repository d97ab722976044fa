"""firecut: spiking SqueezeNet, Fire-module pruning and accuracy-energy benchmarks.

Importing this package is cheap (no torch); the library lives in its submodules:
`firecut.config`, `firecut.data`, `firecut.models`, `firecut.spiking`, `firecut.energy`,
`firecut.train`.
"""

__version__ = "0.1.0"
