"""Errors of the local stack launcher. Each message tells the user what to do."""

from streams.exceptions import AvrecError


class StackError(AvrecError):
    """The local stack could not be started, stopped or inspected."""


class AlreadyRunning(StackError):
    """``stack up`` while the service is already running."""


class PortInUse(StackError):
    """A port the stack needs is taken by another process."""


class MissingDependency(StackError):
    """A tool the stack needs (JDK 17, Maven, the Triton wheel) is not installed."""


class DownloadFailed(StackError):
    """Fetching Kafka's jars from Maven Central failed."""


class NotReady(StackError):
    """A service started but did not become ready in time."""


class ExitedDuringStartup(NotReady):
    """The server process died before it became ready."""
