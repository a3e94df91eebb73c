"""ANN search returning plain (id, score) pairs, skipping pymilvus' per-hit result objects.

pymilvus builds a ``Hit`` (a UserDict) for every result row. For a batch of 250
users x 200 candidates that parsing was ~15% of the worker's CPU (py-spy), more
than the scoring itself. Here the same ``SearchRequest`` that ``MilvusClient.search``
sends is sent on the same connection, and the response's flat id and score
arrays are sliced per query directly.

It uses pymilvus internals (pinned in deploy/requirements.lock). If they change,
it falls back to the public ``MilvusClient.search`` with a warning, so an
upgrade costs speed, never correctness.
"""

from __future__ import annotations

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


def _raw(client: MilvusClient, collection: str, field: str, data: list, limit: int,
         expr: str, timeout_s: float | None, search_params: dict) -> list[list[tuple[str, float]]]:
    from pymilvus.client.prepare import Prepare
    from pymilvus.client.utils import check_status

    conn = client._get_connection()
    request = Prepare.search_requests_with_expr(collection, data, field, search_params, limit, expr or None)
    try:
        response = conn._stub.Search(request, timeout=timeout_s)
    except grpc.RpcError as exc:  # the public path maps these to MilvusException too
        raise MilvusException(message=f"search RPC failed: {exc.code()} {exc.details()}") from exc
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
