"""Training: device mesh and shardings, train state, the pure train step, checkpoints, the loop."""
