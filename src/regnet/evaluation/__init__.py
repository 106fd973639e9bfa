"""Endpoint error, TRE, Jacobian statistics and Dice."""
