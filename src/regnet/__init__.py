"""RegNet: learned single-shot nonrigid image registration (Sokooti et al., MICCAI 2017)."""

__version__ = "0.1.0"


def register(fixed, moving, model=None, **kwargs):
    """Register ``moving`` to ``fixed`` in one shot (see ``regnet.inference.register``)."""
    from regnet.inference.register import register as _register

    return _register(fixed, moving, model=model, **kwargs)


def apply(dvf, image=None, points=None, out=None, invert=False, options=None, **option_values):
    """Carry an image, label map or points through a DVF, or invert it (see
    ``regnet.propagate.apply``)."""
    from regnet.propagate import apply as _apply

    return _apply(dvf, image=image, points=points, out=out, invert=invert, options=options,
                  **option_values)
