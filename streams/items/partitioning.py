"""Which partition a key belongs to: Kafka's default partitioner, which every producer must use.

avrec keeps one owner per key: a user's state lives in the partition their
events arrive in, and avrec's own records about that user (fan-out refreshes,
forget-me, parked interactions) are sent to the partition this function picks.
The two agree only when the producers of ``interactions`` use Kafka's default
partitioner for keyed records, murmur2 of the key bytes modulo the partition
count: the Java client, kafka-python and aiokafka do by default; librdkafka
(confluent-kafka, node-rdkafka, ...) needs ``partitioner=murmur2_random``.
A record that arrives in another partition is dead-lettered (stage
``partition``) rather than split across two owners.
"""

from __future__ import annotations

from kafka.partitioner.default import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner sends a record keyed ``key`` to (as the Java client)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
