"""Connecting to Milvus the same way everywhere: Milvus Lite's server or Milvus standalone by URI."""

from __future__ import annotations

import logging

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from streams.exceptions import VectorStoreError
from streams.settings import MilvusSettings

log = logging.getLogger(__name__)


def milvus_client(settings: MilvusSettings) -> MilvusClient:
    """A ``MilvusClient`` for ``settings.uri``; the token (if any) is never logged."""
    token = settings.token.get_secret_value() if settings.token else ""
    try:
        client = MilvusClient(uri=settings.uri, token=token, db_name=settings.db_name, timeout=settings.timeout_s)
    except MilvusException as exc:
        raise VectorStoreError(
            f"cannot connect to Milvus at {settings.uri}: {exc.message}. Is the stack up (`avrec stack status`)? "
            "For Milvus standalone set AVREC_MILVUS__URI and AVREC_MILVUS__TOKEN."
        ) from exc
    log.debug("connected to Milvus at %s", settings.uri)
    return client
