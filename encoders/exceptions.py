"""Errors of the encoders package. All derive from :class:`streams.exceptions.AvrecError`."""

from __future__ import annotations

from streams.exceptions import AvrecError


class EncoderError(AvrecError):
    """An encoder could not produce a vector."""


class CheckpointError(EncoderError):
    """A configured checkpoint is missing, unreadable or does not fit the tower."""


class MediaError(EncoderError):
    """A media URI could not be turned into samples. Carries the URI and the reason."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri}: {reason}")


class MediaPolicyError(MediaError):
    """The URI is not allowed: scheme, host outside the allow-list, or path outside the roots."""


class MediaFetchError(MediaError):
    """The media could not be read or downloaded (missing file, HTTP error, time-out)."""


class MediaTooLarge(MediaError):
    """The media exceeds the configured size limit."""


class MediaDecodeError(MediaError):
    """The bytes are truncated, corrupt, or use an unsupported codec."""


class InferenceError(EncoderError):
    """Triton answered a request with an error (bad input): not retried."""


class TritonUnavailable(EncoderError):
    """Triton could not be reached or timed out after all retries."""


class CircuitOpen(TritonUnavailable):
    """The client's circuit breaker is open after repeated failures; calls fail fast."""
