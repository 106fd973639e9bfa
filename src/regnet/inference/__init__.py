"""Dense whole-image prediction and single-shot registration."""
