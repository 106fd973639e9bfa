"""Losses, the trainer and checkpoints."""
