"""The one exception type that RegNet raises for bad input."""


class RegNetError(Exception):
    """Bad input or state, with a one-line message that names the file and the problem."""


def fail(path, problem: str) -> RegNetError:
    """Build a :class:`RegNetError` reading ``"<path>: <problem>"``."""
    return RegNetError(f"{path}: {problem}")
