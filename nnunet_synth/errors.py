"""The one exception type that reaches users as a one-line error."""


class SynthError(Exception):
    """A problem with the user's input or environment.

    The message is a single line that names the file or setting at fault and,
    where possible, what to do about it. The command line prints it without a
    traceback and exits with status 2.
    """
