"""The one exception type users see.

Anything raised as `InputError` is bad input (a file, a field, a config key): the CLI prints
its message on one line and exits non-zero without a traceback. Everything else is a bug and
keeps its traceback.
"""


class InputError(Exception):
    """Bad user input. The message must name the file (or URI) and the key/field/line."""
