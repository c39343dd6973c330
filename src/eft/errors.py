"""Errors that mean "the input is wrong": the command line prints them in one line, exit 2."""


class InputError(ValueError):
    """Bad input (file, column, label, model path...); the message says what and how to fix it."""
