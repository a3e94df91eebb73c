"""The Faust application: one ``app`` object, configured from settings.

Agents, topics and tables live in their own modules and register on this app
(faust examples' layout); ``streams.worker`` imports them before starting.
"""

from __future__ import annotations

import faust

from streams.settings import Settings, get_settings


def _broker_credentials(settings: Settings):
    """Faust's credentials for the broker: SASL (over TLS or not), TLS alone, or none (PLAINTEXT)."""
    k = settings.kafka
    if not k.sasl_mechanism:
        # TLS without SASL still needs credentials, or Faust would connect in PLAINTEXT.
        return faust.SSLCredentials(k.ssl_context()) if k.security_protocol == "SSL" else None
    password = k.sasl_password.get_secret_value() if k.sasl_password else ""
    return faust.SASLCredentials(
        username=k.sasl_username, password=password, mechanism=k.sasl_mechanism, ssl_context=k.ssl_context()
    )


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    k = settings.kafka
    return faust.App(
        settings.app_id,
        broker=";".join(f"kafka://{b}" for b in k.bootstrap_list),
        broker_credentials=_broker_credentials(settings),
        # Records are decoded by our own orjson codecs (streams/records.py), so that a
        # malformed payload reaches the agent as bytes and can be dead-lettered.
        key_serializer="raw",
        value_serializer="raw",
        store="rocksdb://",
        # One data directory per replica (WorkerSettings.replica): two workers must never share RocksDB.
        datadir=str(settings.faust_datadir),
        table_standby_replicas=settings.worker.standby_replicas,
        topic_replication_factor=1,
        topic_partitions=k.topics.interactions.partitions,
        # Commit only what agents have acked: a crash re-delivers, dedupe makes it idempotent.
        broker_commit_every=10_000,
        broker_commit_interval=settings.worker.commit_interval_s,
        broker_session_timeout=settings.worker.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.worker.session_timeout_s / 3),
        # The web server (streams/web/): /metrics, the read API, health, the dashboard. Other workers
        # forward a user's read-API request here when this worker owns the user (canonical_url).
        web_enabled=settings.web.enabled,
        web_bind=settings.web.bind,
        web_port=settings.web.port,
        web_host=settings.web.host,
        canonical_url=settings.web.url,
        # Static membership: a restarted pod with the same id rejoins without a rebalance.
        consumer_group_instance_id=settings.worker.group_instance_id or None,
        producer_linger=0.001,
    )


app = create_app()
