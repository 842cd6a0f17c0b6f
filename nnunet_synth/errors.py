"""The one exception type that reaches users as a one-line error."""


class SynthError(Exception):
    """A problem with the user's input or environment.

    The message is a single line that names the file or setting at fault and,
    where possible, what to do about it. The command line prints it without a
    traceback and exits with status 2.
    """


class GeneratorError(SynthError, RuntimeError):
    """A generator broke its contract (wrong shape, non-finite or out-of-range values, another mask).

    Usually a broken or diverged model rather than the user's input; the
    message names the generator and the case, and the command line shows it as
    one line like any SynthError.
    """
