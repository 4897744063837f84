"""The one exception type for problems a user can fix (bad option, missing or corrupt
file, refused overwrite). The CLI prints its message as a single line and exits 1;
anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """A problem the user can fix; the message is one line naming the file or option."""
