"""Errors that mean "the input is wrong": the command line prints them in one line, exit 2."""

from sklearn.exceptions import NotFittedError


class InputError(ValueError):
    """Bad input (file, column, label, model path...); the message says what and how to fix it."""


class NotFittedInputError(InputError, NotFittedError):
    """A model used before ``fit`` (or ``from_pretrained``): scikit-learn's ``NotFittedError``
    too, so ``except NotFittedError`` catches it as it catches scikit-learn's own."""
