"""Plumbing every room uses: configuration (defaults < YAML < flags), one-line user errors,
atomic files, result tables, figures, progress bars, device and process-group set-up, and
checkpoints (one file, written atomically, read with ``torch.load(weights_only=True)``)."""
