"""Shared machinery: configuration, checkpoints, distributed set-up, the training loop,
layer-wise feature extraction with its on-disk cache, and result tables."""
