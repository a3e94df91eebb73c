"""Item-keyed state with one owner per key, and a replica of it in every worker.

Why a package of its own: a user's events are partitioned by user, the rows
they change (co-occurrence, popularity, trending, upload metadata, takedowns)
by item. Read-modify-write of item rows from user-partitioned workers loses
updates as soon as there are two workers, and Faust's GlobalTable does not
keep other workers' writes visible (faust-streaming issue #283), so:

* ``wire.py``: the records on the three internal item topics;
* ``store.py``: :class:`ItemStore`, the deterministic state machine every
  worker runs over the ``item-deltas`` log (same log, same state, everywhere);
* ``replica.py``: :class:`ItemReplica`, which feeds an ItemStore from Kafka
  (bootstrap from the ``item-state`` snapshots, then the tail of the log) and
  lets a caller wait until it has read everything written so far;
* ``owner.py``: the agent that owns each item partition: parking interactions
  that arrived before their item, takedowns in Milvus, and the snapshots;
* ``partitioning.py``: the key -> partition function producers must share.
"""
