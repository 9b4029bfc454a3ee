"""The one exception type that means "the user's input is wrong", shown as one line."""


class UserError(Exception):
    """A bad flag, config, dataset or checkpoint: the message names it and says what is wrong."""
