"""User errors: bad input that the CLI reports as one clear line and a non-zero exit, no traceback."""


class UserError(Exception):
    """A problem with what the user asked for (a family, a prompt, a model, a file).

    The message must name the offending thing. `exit_code` is what the CLI exits with.
    """

    exit_code = 1


class ModelUnavailable(UserError):
    """The model cannot be loaded here (no network, not cached, extra not installed)."""

    exit_code = 2


class Interrupted(BaseException):
    """The run was stopped by a signal (SIGTERM): its manifest says 'interrupted', its complete results stay.

    A BaseException, like KeyboardInterrupt, so that a library's `except Exception` cannot swallow it."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)
