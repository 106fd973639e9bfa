"""Artificial training pairs: the seed's random-peak DVFs (§2.3), deformed images, Dsmooth."""
