"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UnetqError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(UnetqError):
    """The dataset is missing, empty or malformed."""


class ModelError(UnetqError):
    """A model file is missing, unreadable or not a per-pixel classifier."""


class ConfigError(UnetqError):
    """A config, preset or override is invalid."""
