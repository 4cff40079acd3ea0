"""The science of AdaCS registration: networks, warping, losses, trainer, metrics, data, artifacts.

Pure PyTorch + NumPy: nothing here imports ``service`` or ``worker``.
"""
