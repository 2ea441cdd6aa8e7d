"""The one error type for bad user input, at the bottom of the package so that every layer can raise it.

An :class:`InputError`'s message is one line naming the problem (the file, the option or config key, the
value and what was expected). Every command-line entry point turns it into that line on stderr and exit
code 2 (``gid_jax.cli``); the web app turns it into a message on the page.
"""


class InputError(ValueError):
  """Bad user input (photo, video, mask, checkpoint, option, config value): a one-line message."""
