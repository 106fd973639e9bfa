"""The exceptions that RegNet raises for bad input, and the exit codes the CLI maps them to.

* :class:`RegNetError`: the data is bad (a file, an image, a checkpoint, a manifest): exit 1.
* :class:`UsageError`: the call is bad (arguments, config settings, a model name): exit 2.

Both carry a one-line message that names the file or setting and the problem.
"""


class RegNetError(Exception):
    """Bad input data or state, with a one-line message that names the file and the problem."""

    exit_code = 1


class UsageError(RegNetError):
    """A bad argument or setting: the command was called wrongly."""

    exit_code = 2


def fail(path, problem: str) -> RegNetError:
    """Build a :class:`RegNetError` reading ``"<path>: <problem>"``."""
    return RegNetError(f"{path}: {problem}")


def bad_setting(where, problem: str) -> UsageError:
    """Build a :class:`UsageError` reading ``"<where>: <problem>"``."""
    return UsageError(f"{where}: {problem}")
