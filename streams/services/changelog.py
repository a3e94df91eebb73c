"""Make sure a batch's table writes are in Kafka before the batch's offsets can be committed.

Faust writes a table value to RocksDB at once and queues its changelog record in
the producer buffer. Its commit path flushes that buffer first, but the flush
gives up when no message leaves the buffer for 0.1 s (``ProducerBuffer.flush_atmost``),
which happens under load, and then commits offsets anyway. A ``kill -9`` right
after such a commit loses the changelog records of events that will never be
re-delivered: the changelog (what a restart on another host, or after a lost
disk, recovers from) silently misses them. Found by
tests/reliability/test_worker_crash_replay.py.

Calling :func:`changelog_flushed` before an agent returns a batch (Faust acks a
batch only then, and commits only acked offsets) closes that gap: every record
queued so far is handed to the Kafka client, and the client has delivered it.
"""

from __future__ import annotations

from streams.app import app


async def changelog_flushed() -> None:
    buffer = app.producer.buffer
    while buffer.size:  # flush_atmost may return early; keep going until the queue is empty
        await buffer.flush_atmost(None)
    await app.producer.flush()  # the Kafka client delivers everything handed to it (broker acks)
