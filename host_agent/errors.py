"""The one error type the command line turns into a single line: what is wrong, what to do."""


class UserError(Exception):
    """A problem the user can fix; the CLI prints `error: <message>` and exits 2."""
