"""rnnlab: recurrent networks side by side, NumPy from scratch against PyTorch's fused kernels."""

__version__ = "0.1.0"
