"""decoupleQ: 2-bit weight-only post-training quantization."""
