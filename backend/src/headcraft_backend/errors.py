"""The errors users see: the lowest layer, imported by every other (it imports nothing)."""


class UserError(Exception):
    """An error whose message is meant for the user as is (bad input, missing file...)."""


class HeadModelError(UserError, ValueError):
    """A head model's files or arrays are missing or inconsistent; the message names the file."""


class JobCancelled(Exception):
    """Raised inside long work when the user asked to cancel it."""
