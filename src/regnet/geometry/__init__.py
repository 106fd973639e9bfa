"""Warping and Jacobians of displacement fields."""
