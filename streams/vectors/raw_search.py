"""ANN search returning plain (id, score) pairs, skipping pymilvus' per-hit result objects.

pymilvus builds a ``Hit`` (a UserDict) for every result row. For a batch of 250
users x 200 candidates that parsing was ~15% of the worker's CPU (py-spy), more
than the scoring itself. Here the same ``SearchRequest`` that ``MilvusClient.search``
sends is sent on the same connection, and the response's flat id and score
arrays are sliced per query directly.

It uses pymilvus internals (pinned in deploy/requirements.lock). If they change,
it falls back to the public ``MilvusClient.search`` with a warning, so an
upgrade costs speed, never correctness.

:func:`search_ids_async` is the same search for the worker's event loop, with no
thread: the request is built and the answer read on the loop, and gRPC's own
C core waits for the answer. A search in a worker thread needs the GIL to build
its request and again to read the answer; with the loop busy ranking, each
hand-over waited for the GIL (docs/PERFORMANCE.md, "GIL hand-over").
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

log = logging.getLogger(__name__)
_fallback_warned = False


def search_ids(client: MilvusClient, collection: str, field: str, vectors: np.ndarray, limit: int,
               expr: str = "", timeout_s: float | None = None,
               params: dict | None = None) -> list[list[tuple[str, float]]]:
    """Top-``limit`` (id, similarity) per query vector, best first; ``timeout_s`` is the call's deadline.

    ``params`` are the index's search parameters (e.g. ``{"nprobe": 32}`` for IVF_FLAT);
    none for the worker's AUTOINDEX.
    """
    if len(vectors) == 0:
        return []
    data = np.asarray(vectors, dtype=np.float32).tolist()
    search_params = {"params": params} if params else {}
    try:
        return _raw(client, collection, field, data, limit, expr, timeout_s, search_params)
    except (AttributeError, ImportError, TypeError) as exc:
        global _fallback_warned
        if not _fallback_warned:
            log.warning("fast Milvus search path unavailable (%s: %s); using MilvusClient.search "
                        "(slower result parsing). Pin pymilvus as in deploy/requirements.lock to restore it.",
                        type(exc).__name__, exc)
            _fallback_warned = True
        res = client.search(collection, data=data, anns_field=field, limit=limit, filter=expr, timeout=timeout_s,
                            search_params=search_params or None)
        return [[(str(h.id), float(h["distance"])) for h in row] for row in res]


async def search_ids_async(client: MilvusClient, collection: str, field: str, vectors: np.ndarray, limit: int,
                           expr: str = "", timeout_s: float | None = None,
                           params: dict | None = None) -> list[list[tuple[str, float]]]:
    """:func:`search_ids`, awaited on the running loop without a thread (see the module doc); where the
    pymilvus internals it needs are missing, :func:`search_ids` in a thread."""
    if len(vectors) == 0:
        return []
    data = np.asarray(vectors, dtype=np.float32).tolist()
    search_params = {"params": params} if params else {}
    try:
        stub, request = _request(client, collection, field, data, limit, expr, search_params)
        call = stub.Search.future(request, timeout=timeout_s)
    except (AttributeError, ImportError, TypeError):
        return await asyncio.to_thread(search_ids, client, collection, field, vectors, limit, expr, timeout_s, params)
    loop = asyncio.get_running_loop()
    answer = loop.create_future()

    def settle(_call) -> None:  # in a gRPC thread: hand the outcome to the loop
        loop.call_soon_threadsafe(_settle, answer, call)

    call.add_done_callback(settle)
    try:
        response = await answer
    except asyncio.CancelledError:
        call.cancel()
        raise
    return _hits(response)


def _settle(answer: asyncio.Future, call) -> None:
    if answer.done():  # cancelled meanwhile
        return
    try:
        answer.set_result(call.result())
    except grpc.RpcError as exc:
        failure = _rpc_failed(exc)
        failure.__cause__ = exc  # as ``raise ... from``: retry.py reads the gRPC status code there
        answer.set_exception(failure)
    except grpc.FutureCancelledError:
        answer.cancel()


def _rpc_failed(exc: grpc.RpcError) -> MilvusException:
    """A gRPC failure as the public path reports it (retry.py tells outages from refusals by it)."""
    return MilvusException(message=f"search RPC failed: {exc.code()} {exc.details()}")


def _request(client: MilvusClient, collection: str, field: str, data: list, limit: int, expr: str,
             search_params: dict):
    """(the connection's gRPC stub, the ``SearchRequest`` ``MilvusClient.search`` would send)."""
    from pymilvus.client.prepare import Prepare

    conn = client._get_connection()
    return conn._stub, Prepare.search_requests_with_expr(collection, data, field, search_params, limit, expr or None)


def _raw(client: MilvusClient, collection: str, field: str, data: list, limit: int,
         expr: str, timeout_s: float | None, search_params: dict) -> list[list[tuple[str, float]]]:
    stub, request = _request(client, collection, field, data, limit, expr, search_params)
    try:
        response = stub.Search(request, timeout=timeout_s)
    except grpc.RpcError as exc:  # the public path maps these to MilvusException too
        raise _rpc_failed(exc) from exc
    return _hits(response)


def _hits(response) -> list[list[tuple[str, float]]]:
    """The response's flat id and score arrays, sliced per query."""
    from pymilvus.client.utils import check_status

    check_status(response.status)
    res = response.results
    ids = res.ids.str_id.data if res.ids.HasField("str_id") else [str(i) for i in res.ids.int_id.data]
    ids = list(ids)
    scores = list(res.scores)
    out: list[list[tuple[str, float]]] = []
    start = 0
    for k in res.topks:
        out.append(list(zip(ids[start:start + k], scores[start:start + k])))
        start += k
    return out
