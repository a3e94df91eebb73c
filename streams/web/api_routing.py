"""Answering a user's read-API request on the worker that owns the user (any worker may receive it).

A user's state lives in the ``user_state`` table, in the partition of the user's ``interactions``
records: murmur2 of the *raw* user id (Kafka's default partitioner), because the agent writes the
table in the scope of the event. Faust's ``app.table_route`` cannot find that owner here: it hashes
the key as the table serialises it, JSON (``"u1"`` with the quotes), which lands on another
partition for most ids. So the partition is computed as the producers do
(``streams.items.partitioning.partition_for``), and the owner's URL read from the same assignor
metadata ``table_route`` uses (``app.router.table_metadata``). The request is forwarded once, with a
header saying so; the receiver answers itself, or 503 if the partition moved meanwhile (a rebalance),
so a request never bounces between workers.
"""

from __future__ import annotations

import logging

import aiohttp
from yarl import URL

from streams.app import app
from streams.items.partitioning import partition_for
from streams.web.api_params import BadRequest

log = logging.getLogger(__name__)

FORWARDED = "X-Avrec-Forwarded-By"
FORWARD_TIMEOUT_S = 30.0


def _table():
    # Imported here, not at the top: see the note in streams/web/api.py on import cycles.
    from streams.tables import user_state

    return user_state


def user_partition(user_id: str) -> int:
    return partition_for(user_id.encode(), _table().partitions or app.conf.topic_partitions)


def _ident(url: URL | str) -> tuple[str, int]:
    u = URL(str(url))
    return (u.host or "", int(u.port or 80))


def owner_url(user_id: str) -> URL | None:
    """The web URL of the worker whose active partitions hold ``user_id`` (None: nobody yet)."""
    table = _table()
    topic = table.changelog_topic.get_topic_name()
    p = user_partition(user_id)
    for url, tps in app.router.table_metadata(table.name).items():
        if p in tps.get(topic, ()):
            return URL(str(url))
    return None


def owns(user_id: str) -> bool:
    """Whether this worker holds the user's partition as active (its state is here and current)."""
    from faust.types import TP

    topic = _table().changelog_topic.get_topic_name()
    return TP(topic, user_partition(user_id)) in app.assignor.assigned_actives()


async def forward_if_elsewhere(view, request, user_id: str):
    """The owner's response if another worker owns ``user_id``; None when this worker should answer."""
    if request.headers.get(FORWARDED) is None:
        dest = owner_url(user_id)
        if dest is None:
            raise BadRequest("no worker owns this user's partition yet (the group is rebalancing); retry", 503)
        if _ident(dest) != _ident(app.conf.canonical_url):
            return await _forward(view, request, dest)
    if app.rebalancing or app.in_recovery:
        raise BadRequest("the worker is rebalancing or recovering its tables; retry", 503)
    if not owns(user_id):
        raise BadRequest("this user's partition is moving to another worker; retry", 503)
    return None


async def _forward(view, request, dest: URL):
    url = request.url.with_host(dest.host).with_port(dest.port)
    try:
        async with app.http_client.get(url, headers={FORWARDED: str(app.conf.canonical_url)},
                                       timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as resp:
            body = await resp.read()
            return view.bytes(body, content_type=resp.content_type, status=resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("cannot forward %s to the user's owner %s: %r", request.path, dest, exc)
        raise BadRequest(f"the worker owning this user ({dest}) did not answer ({type(exc).__name__}); retry",
                         503) from None
