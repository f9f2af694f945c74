"""One exception hierarchy for fewshot. Every message says what was wrong and what to do about it."""
from __future__ import annotations


class FewShotError(Exception):
    """Base class of every error fewshot raises on purpose."""


class InvalidInputError(FewShotError, ValueError):
    """An argument has the wrong type, shape or content."""


class EmptyInputError(InvalidInputError):
    """An input list, text or array is empty where at least one item is needed."""


class DimensionMismatchError(InvalidInputError):
    """A vector's dimension differs from the index's / encoder's dimension."""


class NonFiniteError(InvalidInputError):
    """A vector holds NaN or inf values."""


class UnknownClassError(FewShotError, KeyError):
    """A class name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DuplicateClassError(FewShotError, ValueError):
    """A class name that is already registered."""


class EmptyClassError(InvalidInputError):
    """A class with neither examples nor a description."""


class ImageReadError(InvalidInputError):
    """An image file that cannot be read, is not an image, or is too large."""


class DataFormatError(FewShotError, ValueError):
    """A data file (CSV, JSONL, image folder) that is malformed."""


class InputFileError(DataFormatError):
    """One input file that is missing, unreadable or malformed; ``path`` names it (the message starts with it)."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem

    def __reduce__(self) -> tuple:  # crosses process boundaries (Ray workers) with its path
        return (type(self), (self.path, self.problem))


class CorruptIndexError(FewShotError):
    """A saved engine or index that is missing files, fails its checksum or cannot be parsed."""


class SaveNotFoundError(CorruptIndexError, FileNotFoundError):
    """No saved engine or index at the given path (not a directory, or nothing saved in it yet). A
    ``FileNotFoundError`` too, and a ``CorruptIndexError`` as before it had its own class."""


class VersionMismatchError(CorruptIndexError):
    """A saved engine or index written by an incompatible format version."""


class EncoderUnavailableError(FewShotError, RuntimeError):
    """An encoder name that cannot be resolved or loaded offline."""


class NotFittedError(FewShotError, RuntimeError):
    """A classifier or engine used before it has any classes."""


# ---- errors of the HTTP service (fewshot serve) as fewshot.client raises them


class ServiceError(FewShotError):
    """An error answer from the service that has no more specific class (e.g. a 5xx, or an unknown route).
    ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthenticationError(FewShotError, PermissionError):
    """A ``/v1`` request without the right ``Authorization: Bearer <token>`` (HTTP 401)."""


class UnknownEngineError(FewShotError, LookupError):
    """An engine name the service does not hold (HTTP 404)."""


class UnknownJobError(FewShotError, LookupError):
    """A job id the service does not know (HTTP 404)."""


class EngineExistsError(FewShotError, ValueError):
    """Creating an engine whose name is taken (HTTP 409)."""


class RequestTooLargeError(InvalidInputError):
    """A request over one of the service's limits: body bytes, inputs per request, characters per text (413)."""


class ConnectionLostError(FewShotError, ConnectionError):
    """The service closed the connection before its answer was complete (it stopped or was killed mid-answer).
    A mutation sent this way may or may not have taken effect: read the state back before retrying it."""



class UncalibratedRejectionWarning(UserWarning):
    """``reject=True`` asked for open-set rejection that cannot be calibrated (too few examples to hold out, and
    no background text for a zero-shot threshold): nothing is rejected. Add examples to the classes."""
