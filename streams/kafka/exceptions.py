"""Errors talking to Kafka."""

from streams.exceptions import AvrecError


class KafkaError(AvrecError):
    """Kafka could not be reached or refused a request."""


class BrokerUnavailable(KafkaError):
    """No broker answered at the configured bootstrap servers."""


class TopicConfigError(KafkaError):
    """A topic could not be created or reconfigured."""
