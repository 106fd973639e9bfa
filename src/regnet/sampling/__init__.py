"""Training patches: magnitude classes, two-scale patch extraction, chunked streaming."""
