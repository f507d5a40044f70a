"""Errors a user can act on. The CLI prints their message and exits non-zero, without a traceback."""


class TuneforgeError(Exception):
    """Base class: the message alone must tell the user what is wrong and where."""


class ConfigError(TuneforgeError):
    """A config file, override or value is invalid; the message names the field path."""


class ArtifactError(TuneforgeError):
    """An artifact is missing, incomplete, of the wrong kind or tampered with."""


class DataError(TuneforgeError):
    """Input data is malformed; the message names the file and the line."""


class ModelLoadError(TuneforgeError):
    """A model could not be resolved or loaded; the message says why."""


class TrainError(TuneforgeError):
    """Training could not go on (resume mismatch, memory plan, failed checkpoint)."""


class CompressError(TuneforgeError):
    """A compression step was refused or failed its parity check against its parent."""
