"""All of avrec's settings, in one place.

Every value can be overridden from the environment with the ``AVREC_`` prefix
and ``__`` between nesting levels, for example::

    AVREC_KAFKA__BOOTSTRAP_SERVERS=broker-1:9092,broker-2:9092
    AVREC_MILVUS__TOKEN=root:Milvus
    AVREC_TRITON__URL=triton:8001 AVREC_TRITON__PROTOCOL=grpc

Secrets are ``SecretStr``: they print as ``**********`` in ``repr``, in logs and
in ``avrec config show``, and only ``.get_secret_value()`` reveals them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.ranking.config import RankingSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TopicSpec(BaseModel):
    """One Kafka topic: name, partitions and the configs the launcher applies."""

    name: str
    partitions: int = Field(default=4, ge=1)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    # Compacted topics keep the latest record per key (user state, lists); the
    # forget-me tombstones rely on it.
    compact: bool = False

    def configs(self) -> dict[str, str]:
        cfg = {"retention.ms": str(self.retention_ms)}
        cfg["cleanup.policy"] = "compact,delete" if self.compact else "delete"
        return cfg


class TopicsSettings(BaseModel):
    uploads: TopicSpec = TopicSpec(name="uploads")
    interactions: TopicSpec = TopicSpec(name="interactions", partitions=8)
    control: TopicSpec = TopicSpec(name="control", partitions=1)
    recommendations: TopicSpec = TopicSpec(name="recommendations", partitions=8, compact=True)
    uploads_dlq: TopicSpec = TopicSpec(name="uploads.dlq", partitions=1, retention_ms=30 * 24 * 3600 * 1000)
    interactions_dlq: TopicSpec = TopicSpec(
        name="interactions.dlq", partitions=1, retention_ms=30 * 24 * 3600 * 1000
    )
    control_dlq: TopicSpec = TopicSpec(name="control.dlq", partitions=1, retention_ms=30 * 24 * 3600 * 1000)
    # Which list a user was shown (keyed by user_id, co-partitioned with interactions): the
    # online metrics attribute the user's later interactions to it (CTR per model_version).
    impressions: TopicSpec = TopicSpec(name="impressions", partitions=8)

    @model_validator(mode="before")
    @classmethod
    def _merge_with_defaults(cls, data: Any) -> Any:
        """``AVREC_KAFKA__TOPICS__INTERACTIONS__PARTITIONS=12`` changes only the partitions:
        a partial override is laid over that topic's defaults instead of replacing them."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is not None and isinstance(value, dict) and isinstance(field.default, TopicSpec):
                merged[name] = {**field.default.model_dump(), **value}
        # Impressions are co-partitioned with interactions (one worker owns a user's both): unless set
        # on their own, they follow AVREC_KAFKA__TOPICS__INTERACTIONS__PARTITIONS.
        inter, imp = data.get("interactions"), data.get("impressions")
        if isinstance(inter, dict) and "partitions" in inter and not (isinstance(imp, dict) and "partitions" in imp):
            base = merged.get("impressions") or cls.model_fields["impressions"].default.model_dump()
            merged["impressions"] = {**base, "partitions": inter["partitions"]}
        return merged

    def all(self) -> list[TopicSpec]:
        return [getattr(self, name) for name in type(self).model_fields]


class MaskedStr(str):
    """A secret handed to a library that wants a ``str``: usable as one, but its ``repr`` is masked.

    kafka-python logs its whole configuration at DEBUG (``Starting KafkaAdminClient
    with configuration: {...}``), i.e. the ``repr`` of every value: the password
    must not be in it.
    """

    def __repr__(self) -> str:
        return "'**********'"


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # TLS (SSL and SASL_SSL): the CA bundle that signed the brokers' certificates (None: the system's),
    # and whether the certificate must name the host connected to.
    ssl_cafile: Path | None = None
    ssl_check_hostname: bool = True
    client_id: str = "avrec"
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Prepended to every topic name: several deployments (or test runs) can share a cluster.
    topic_prefix: str = ""
    topics: TopicsSettings = Field(default_factory=TopicsSettings)
    # Partitions of the internal item topics (item-deltas, item-commands, item-state): how many
    # workers can share the item-keyed state's ownership. Chosen up front, like the input topics'
    # (docs/EVENTS.md, "Partitions"): a key's partition is its hash modulo this count.
    item_partitions: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _apply_prefix(self) -> "KafkaSettings":
        if self.topic_prefix:
            for field_name in TopicsSettings.model_fields:
                spec = getattr(self.topics, field_name)
                if not spec.name.startswith(self.topic_prefix):
                    setattr(self.topics, field_name, spec.model_copy(update={"name": self.topic_prefix + spec.name}))
        return self

    @model_validator(mode="after")
    def _check_security(self) -> "KafkaSettings":
        """SASL needs a mechanism and credentials; a mechanism without SASL would be silently ignored."""
        if self.security_protocol.startswith("SASL_"):
            missing = [name for name in ("sasl_mechanism", "sasl_username", "sasl_password") if not getattr(self, name)]
            if missing:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs {', '.join(missing)} "
                    f"(AVREC_KAFKA__{missing[0].upper()})"
                )
        elif self.sasl_mechanism:
            raise ValueError(
                f"sasl_mechanism {self.sasl_mechanism} is set but security_protocol is {self.security_protocol}: "
                "set AVREC_KAFKA__SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` for aiokafka/Faust (None without TLS): verifies the broker against ``ssl_cafile``."""
        if not self.uses_tls:
            return None
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        ctx.check_hostname = self.ssl_check_hostname
        return ctx

    def aiokafka_config(self) -> dict[str, Any]:
        """Connection settings in the keyword form aiokafka's clients take (the worker's own consumers)."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_list,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "request_timeout_ms": int(self.request_timeout_s * 1000),
            "ssl_context": self.ssl_context(),
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = (
                MaskedStr(self.sasl_password.get_secret_value()) if self.sasl_password else None
            )
        return cfg

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection settings in the keyword form kafka-python's clients take."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_list,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "request_timeout_ms": int(self.request_timeout_s * 1000),
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = (
                MaskedStr(self.sasl_password.get_secret_value()) if self.sasl_password else None
            )
        if self.uses_tls:
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_cafile:
                cfg["ssl_cafile"] = str(self.ssl_cafile)
        return cfg


class TritonSettings(BaseModel):
    url: str = "127.0.0.1:8000"
    protocol: Literal["http", "grpc"] = "http"
    # TLS to Triton (gRPC natively, HTTP through a TLS-terminating proxy): the CA bundle that signed the
    # server's certificate (None: the system's), and an optional client certificate and key (mutual TLS).
    ssl: bool = False
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    # Open the circuit after this many consecutive failures, for this long.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _check_tls(self) -> "TritonSettings":
        given = [n for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, n)]
        if given and not self.ssl:
            raise ValueError(f"{', '.join(given)} given but ssl is off: set AVREC_TRITON__SSL=true")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("a client certificate needs both ssl_certfile and ssl_keyfile")
        return self

    def ssl_context(self) -> Any:
        """The ``ssl.SSLContext`` for the HTTP client (None without TLS)."""
        if not self.ssl:
            return None
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.ssl_certfile and self.ssl_keyfile:
            ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return ctx


class MilvusSettings(BaseModel):
    uri: str = "http://127.0.0.1:19530"
    token: SecretStr | None = None
    db_name: str = "default"
    items_collection: str = "items"
    users_collection: str = "users"
    timeout_s: float = Field(default=10.0, gt=0)


class StackSettings(BaseModel):
    """The local, embedded stack started by ``avrec stack up`` (deploy/local)."""

    state_dir: Path = PROJECT_ROOT / ".stack"
    # Downloads (Kafka's jars) shared by every state dir, so tests reuse them.
    cache_dir: Path = PROJECT_ROOT / ".cache"
    host: str = "127.0.0.1"
    kafka_version: str = "4.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "768m"
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    triton_model_repository: Path = PROJECT_ROOT / "triton_models"
    milvus_port: int = 19530
    ready_timeout_s: float = Field(default=180.0, gt=0)
    stop_timeout_s: float = Field(default=30.0, gt=0)


class EncoderSettings(BaseModel):
    dim: int = Field(default=384, ge=8)
    audio_checkpoint: Path | None = None
    video_checkpoint: Path | None = None
    fusion_checkpoint: Path | None = None
    sample_rate: int = 16_000
    video_frames: int = Field(default=8, ge=1)
    frame_size: int = Field(default=112, ge=16)
    max_audio_s: float = Field(default=30.0, gt=0)
    # Media ingestion: file:// only below these roots; http(s) only to these hosts.
    media_roots: list[Path] = Field(default_factory=list)
    media_hosts: list[str] = Field(default_factory=list)
    media_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    media_timeout_s: float = Field(default=20.0, gt=0)


class WorkerSettings(BaseModel):
    """How the Faust agents batch and fan out."""

    upload_batch: int = Field(default=16, ge=1)
    upload_batch_within_s: float = Field(default=0.05, gt=0)
    interaction_batch: int = Field(default=256, ge=1)
    interaction_batch_within_s: float = Field(default=0.01, gt=0)
    # New-content fan-out: refresh the lists of the users closest to a new item.
    # Each refreshed user costs one ranked list (~1-5 ms of worker CPU here), so this
    # bounds an upload's cost: 20 closest users, the rest see it at their next event.
    fanout_users: int = Field(default=20, ge=0)
    fanout_min_similarity: float = Field(default=0.2, ge=-1, le=1)
    item_cache_size: int = Field(default=200_000, ge=0)
    # Fill the item cache in the background at start, the most interacted-with items first, up to
    # 90% of item_cache_size (streams/services/cache_warm.py): a restarted worker's lists do not wait
    # for a Milvus read of every candidate they meet first (~10 ms a batch on the realistic benchmark).
    # A 100k-item catalogue took ~19 s of a Milvus Lite scan; off = the cache fills on demand only.
    item_cache_warm: bool = True
    media_workers: int = Field(default=2, ge=1)
    # Users per Milvus search; the next chunk's search overlaps this chunk's ranking.
    search_chunk: int = Field(default=64, ge=1)
    # Content candidates cached per user (streams/ranking/ann_cache.py): a user's Milvus search is
    # skipped while the stored one provably gives the same top N (AVREC_RANKING__ANN_CANDIDATES).
    # Searches ask for N + extra hits: a deeper search survives larger turns of the taste vector.
    # Simulated users (tests/unit/test_ann_cache.py, histories of 1..200 events) hit 65% with
    # extra 100, 75% with 200, 83% with 400; a hit re-scores N + extra cached vectors (~0.2 ms at
    # 200), a miss parses that many hits. Past max_angle_deg of turn a hit is not even tried (10:
    # as many hits as 20 with fewer vector fetches for nothing). ~5.5 KB per cached user (400 ids,
    # a 384-d query): 20,000 users ~110 MB. 0 users disables it: the default, because on
    # the realistic benchmark (bench/realistic.py, 100k items, docs/PERFORMANCE.md) it hit for
    # 14% of the Zipf mix's warm users and 0% of MovieLens users (who rate in sessions: many
    # events between two lists), and the deeper searches and the stores cost the worker more
    # than the skipped searches saved. Turn it on where users turn slowly and searches are dear.
    ann_cache_users: int = Field(default=0, ge=0)
    ann_cache_extra: int = Field(default=200, ge=0)
    ann_cache_max_angle_deg: float = Field(default=10.0, ge=0, le=180)
    # Only users with at least this many positive history items use it: one event turns a
    # shorter history too far for a stored search to prove anything (simulated hit rate 1% at
    # 1-9 items, 46% at 10-49), so their searches ask for N hits only, as without the cache.
    ann_cache_min_history: int = Field(default=10, ge=0)
    # The worker's event loop: uvloop (default) or asyncio's own ("aio").
    event_loop: Literal["uvloop", "aio"] = "uvloop"
    # numpy's BLAS threads in the worker (0 = the BLAS library's own default, one per core).
    # Every matrix the worker multiplies is small (a list's ~400 x 384 candidates), and
    # BLAS helper threads on a busy 2-core machine wait on each other whenever one is
    # preempted by Kafka or Milvus: under load recommend() p90 reached 104 ms in one
    # run of four with the default, and stayed under 1.2 ms with 1 (PERFORMANCE.md).
    blas_threads: int = Field(default=1, ge=0)
    # CPython's GIL switch interval in the worker, ms (sys.setswitchinterval; 0 = leave Python's 5 ms).
    # A Milvus search or fetch runs in a thread that needs the GIL to build its request and to read
    # the answer; while the event loop ranks, each hand-over waited up to the interval: a 3-user
    # search took 10.9 ms beside a busy thread at 5 ms, 5.2 ms at 1 ms, 2.7 ms alone
    # (bench/gil_handover.py; docs/PERFORMANCE.md, "GIL hand-over").
    gil_switch_interval_ms: float = Field(default=1.0, ge=0)
    # How often the worker checks AVREC_RANKING__RANKER_PATH for a refitted ranker and swaps it in
    # (streams/services/ranker_reload.py); 0 = load it once, at start.
    ranker_reload_s: float = Field(default=30.0, ge=0)
    # Garbage-collector pauses (streams/services/gc_policy.py): freeze the long-lived heap
    # this often so collections skip it (0 = CPython's default collector), and run one
    # full collection this often to free garbage cycles among frozen objects.
    gc_freeze_every_s: float = Field(default=10.0, ge=0)
    gc_full_collect_every_s: float = Field(default=900.0, gt=0)
    # Milvus writes of user vectors (the fan-out index) start at most this often, coalesced
    # (streams/services/user_mirror.py); 0 = as soon as the previous write is done.
    user_mirror_every_s: float = Field(default=1.0, ge=0)
    # How often each agent logs its throughput and per-stage time split (INFO).
    stats_every_s: float = Field(default=30.0, gt=0)
    # Transient failures of Triton or Milvus: retry with backoff, never skip an event.
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    # Offsets of processed events are committed this often (after the producer is flushed).
    commit_interval_s: float = Field(default=1.0, gt=0)
    # How fast the group notices a dead worker and hands its partitions over (kill -9 recovery).
    session_timeout_s: float = Field(default=10.0, gt=0)
    # Kafka static membership (group.instance.id, e.g. the StatefulSet pod name): a worker that
    # restarts under the same id within the session timeout gets its partitions back without a
    # rebalance. "" = dynamic membership.
    group_instance_id: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")
    # Online metrics: an interaction counts as a click on a list the user was shown (an
    # impression) at most this long after it; each user keeps their last few impressions.
    impression_attribution_s: float = Field(default=1800.0, gt=0)
    impressions_kept: int = Field(default=20, ge=1)

    # -- scale-out (streams/items/, docs/RELIABILITY.md "Several workers") --------------------
    # This worker's name among the replicas of one app id: each replica keeps its RocksDB state in
    # a data directory of its own (<state_dir>/faust/<app_id>@<replica>; "" = <state_dir>/faust/<app_id>).
    replica: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")
    # Warm copies of other workers' user-state partitions kept by each worker (Faust standbys): a
    # dead worker's partitions are served again after reading only the changelog's tail.
    standby_replicas: int = Field(default=1, ge=0)
    # Lists are ranked from an item state that holds at least every item change written before the
    # batch ("consistent": one offsets request and a wait of a few ms per batch), or from whatever the
    # replica has read ("latest": no wait; lists can miss the last few ms of other workers' events).
    item_state_reads: Literal["consistent", "latest"] = "consistent"
    # Longest wait for the replica per batch; beyond it the batch is ranked anyway and a warning logged.
    item_state_wait_s: float = Field(default=5.0, gt=0)
    # How long the replica's fetch waits at the broker for new records (latency vs idle requests).
    replica_fetch_wait_ms: int = Field(default=5, ge=0)
    # How long a batch's item ops may wait for the broker's ack (streams/items/ops_producer.py) before
    # the batch fails: Faust's producer_request_timeout, so a Kafka outage holds the batch, as it holds
    # the lists and the state changelog, instead of dead-lettering it.
    item_ops_request_timeout_s: float = Field(default=1200.0, gt=0)
    # Interactions whose item is not in the catalogue yet are parked with the item's owner and applied
    # when the upload lands; past this wait they go to the dead-letter topic (stage unknown_item).
    park_max_wait_s: float = Field(default=300.0, gt=0)
    park_max_per_item: int = Field(default=10_000, ge=1)
    # The item owners' clock: parked interactions are checked and expired this often ...
    item_tick_s: float = Field(default=5.0, gt=0)
    # ... and the rows changed since the last snapshot are written to item-state this often.
    item_snapshot_every_s: float = Field(default=30.0, gt=0)


class WebSettings(BaseModel):
    """The worker's web server (streams/web/): /metrics, the read API, health and the dashboard."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(default=6066, ge=0, le=65535)
    # The host other workers reach this one at: the read API forwards a user's request to the worker
    # that owns the user's partition (Faust's table routing), by this host and ``port``.
    host: str = "127.0.0.1"
    # The most items one read-API call returns (n + offset).
    api_max_n: int = Field(default=100, ge=1)
    # The dashboard's charts: one sample of the worker's metrics this often, kept this long.
    series_every_s: float = Field(default=1.0, gt=0)
    series_window_s: float = Field(default=600.0, gt=0)
    # Catalogue coverage and cold-start share are measured over this many recent lists.
    recent_lists: int = Field(default=1000, ge=1)
    # Dead letters the dashboard shows (the newest, per dead-letter topic).
    dead_letters_shown: int = Field(default=50, ge=1)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVREC_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    app_id: str = "avrec"
    log_level: str = "INFO"
    data_dir: Path = PROJECT_ROOT.parent / "shared" / "data"
    model_version: str = "hybrid-v1"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    encoders: EncoderSettings = Field(default_factory=EncoderSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @model_validator(mode="after")
    def _follow_local_stack(self) -> "Settings":
        """Clients follow the local stack's ports unless their address is set explicitly.

        So ``AVREC_STACK__KAFKA_PORT=29092`` alone moves both the broker and every
        client; ``AVREC_KAFKA__BOOTSTRAP_SERVERS`` still wins when given.
        """
        st = self.stack
        if "bootstrap_servers" not in self.kafka.model_fields_set:
            self.kafka.bootstrap_servers = f"{st.host}:{st.kafka_port}"
        if "url" not in self.triton.model_fields_set:
            port = st.triton_grpc_port if self.triton.protocol == "grpc" else st.triton_http_port
            self.triton.url = f"{st.host}:{port}"
        if "uri" not in self.milvus.model_fields_set:
            self.milvus.uri = f"http://{st.host}:{st.milvus_port}"
        return self

    def internal_topics(self) -> list[TopicSpec]:
        """avrec's own topics, named after the app id: per-user commands (partitioned like interactions)
        and the three item topics (``streams/items/wire.py``)."""
        k = self.kafka
        week = 7 * 24 * 3600 * 1000
        return [
            TopicSpec(name=f"{self.app_id}-user-commands", partitions=k.topics.interactions.partitions,
                      retention_ms=week),
            TopicSpec(name=f"{self.app_id}-item-deltas", partitions=k.item_partitions, retention_ms=week),
            TopicSpec(name=f"{self.app_id}-item-commands", partitions=k.item_partitions, retention_ms=week),
            TopicSpec(name=f"{self.app_id}-item-state", partitions=k.item_partitions, retention_ms=-1,
                      compact=True),
        ]

    def changelog_topics(self) -> list[TopicSpec]:
        """The changelogs of the worker's Faust tables (streams/tables.py), compacted, named as Faust
        names them. The worker creates them before it joins the group: on a fresh cluster, a table
        whose changelog Faust had not created yet when its agent first wrote was seen refusing those
        writes (PartitionsMismatch) until the topic appeared, sending that time's item commands to the
        dead-letter topic."""
        k = self.kafka
        return [TopicSpec(name=f"{self.app_id}-{table}-changelog", partitions=partitions, retention_ms=-1,
                          compact=True)
                for table, partitions in (("user-state", k.topics.interactions.partitions),
                                          ("item-owner", k.item_partitions))]

    @property
    def faust_datadir(self) -> Path:
        """This replica's RocksDB state (``WorkerSettings.replica``)."""
        name = self.app_id if not self.worker.replica else f"{self.app_id}@{self.worker.replica}"
        return self.stack.state_dir / "faust" / name

    def masked_dump(self) -> dict[str, Any]:
        """A JSON-safe view for printing: every secret is masked."""
        return self.model_dump(mode="json")  # SecretStr serialises as '**********'


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
