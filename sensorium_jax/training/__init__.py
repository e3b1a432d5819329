"""Training: sharded pure train steps, schedules, checkpoints and the training loop."""
