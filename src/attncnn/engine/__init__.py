"""The training engine: configs, the loop, checkpoints, metrics."""
