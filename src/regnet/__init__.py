"""RegNet: learned single-shot nonrigid image registration (Sokooti et al., MICCAI 2017)."""

__version__ = "0.1.0"


def register(fixed, moving, model=None, **kwargs):
    """Register ``moving`` to ``fixed`` in one shot (see ``regnet.inference.register``)."""
    from regnet.inference.register import register as _register

    return _register(fixed, moving, model=model, **kwargs)
