"""framefarm's exception tree.

::

    FramefarmError            internal faults: keep their traceback, exit 1
    ├── TransientError        an I/O fault a retry may fix (disk full, throttling): one line, exit 1
    └── UserError             something the user can fix: one clear line, exit 2
        ├── SketchError       the sketch raised or returned a bad frame (names the frame)
        ├── MissingExtraError an optional dependency is not installed (gives the pip line)
        ├── StorageKeyError   a key that should be in storage is not there
        ├── LeaseHeld         another process drives the run (names it)
        └── SegmentRejected   a segment does not match its render record (names the chunk)
"""

from __future__ import annotations

USER_ERROR_EXIT_CODE = 2
INTERNAL_ERROR_EXIT_CODE = 1


class FramefarmError(Exception):
    """Base of every error framefarm raises on purpose."""

    exit_code = INTERNAL_ERROR_EXIT_CODE


class TransientError(FramefarmError):
    """A fault that a retry may fix (storage or job log I/O): the message is one line."""


class UserError(FramefarmError):
    """An error the user can fix; the message names the input and the fix."""

    exit_code = USER_ERROR_EXIT_CODE


class SketchError(UserError):
    """The sketch failed on a frame: the message names the frame, `details` holds its traceback."""

    def __init__(self, message: str, *, frame: int | None = None, details: str = "") -> None:
        super().__init__(message)
        self.frame = frame
        self.details = details

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields must survive pickling across worker processes.
        return (_rebuild_sketch_error, (str(self), self.frame, self.details))

    def full_text(self) -> str:
        """The one-line message, then the sketch's own traceback when there is one."""
        return f"{self}\n{self.details}".rstrip() if self.details else str(self)


def _rebuild_sketch_error(message: str, frame: int | None, details: str) -> SketchError:
    return SketchError(message, frame=frame, details=details)


class MissingExtraError(UserError):
    """An optional dependency is missing; the message says which extra to install."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs an optional dependency: pip install 'framefarm[{extra}]'")


class StorageKeyError(UserError, KeyError):
    """A key is not in storage."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url

    def __str__(self) -> str:
        return f"not found in storage: {self.url}"

    def __reduce__(self) -> tuple[object, ...]:
        return (StorageKeyError, (self.url,))


class LeaseHeld(UserError):
    """A second driver of a run that is already being driven."""


class SegmentRejected(UserError):
    """A segment that does not match what its render job recorded (corrupt, swapped, stale)."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_segment_rejected, (str(self), self.index))


def _rebuild_segment_rejected(message: str, index: int) -> SegmentRejected:
    return SegmentRejected(message, index=index)
