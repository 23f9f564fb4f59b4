"""The PyTorch backend: fused nn.RNN / nn.LSTM / nn.GRU kernels (oneDNN on CPU, cuDNN on GPU)."""
