"""Settings: environment overrides, secrets masked when printed, clients following the local stack."""

from __future__ import annotations

import subprocess
import sys

import orjson

from streams.settings import Settings


def test_environment_overrides_nested_values(monkeypatch):
    monkeypatch.setenv("AVREC_KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    monkeypatch.setenv("AVREC_KAFKA__TOPICS__INTERACTIONS__PARTITIONS", "12")
    monkeypatch.setenv("AVREC_TRITON__PROTOCOL", "grpc")
    monkeypatch.setenv("AVREC_RANKING__TOP_K", "7")
    s = Settings()
    assert s.kafka.bootstrap_list == ["b1:9092", "b2:9092"]
    assert s.kafka.topics.interactions.partitions == 12
    assert s.kafka.topics.interactions.name == "interactions"  # untouched fields keep their defaults
    assert s.triton.protocol == "grpc"
    assert s.ranking.top_k == 7


def test_clients_follow_local_stack_ports_unless_set_explicitly(monkeypatch):
    monkeypatch.setenv("AVREC_STACK__KAFKA_PORT", "19092")
    monkeypatch.setenv("AVREC_STACK__MILVUS_PORT", "29530")
    monkeypatch.setenv("AVREC_STACK__TRITON_GRPC_PORT", "18001")
    monkeypatch.setenv("AVREC_TRITON__PROTOCOL", "grpc")
    s = Settings()
    assert s.kafka.bootstrap_servers.endswith(":19092")
    assert s.milvus.uri.endswith(":29530")
    assert s.triton.url.endswith(":18001")
    monkeypatch.setenv("AVREC_MILVUS__URI", "http://milvus.prod:19530")
    assert Settings().milvus.uri == "http://milvus.prod:19530"


def test_topic_prefix_applies_to_every_topic(monkeypatch):
    monkeypatch.setenv("AVREC_KAFKA__TOPIC_PREFIX", "tenant7-")
    names = [t.name for t in Settings().kafka.topics.all()]
    assert names and all(n.startswith("tenant7-") for n in names)
    assert "tenant7-interactions.dlq" in names


def test_secrets_are_masked_in_repr_dump_and_config_show(monkeypatch):
    secret_pw, secret_token = "kafka-pw-9f8e7d", "root:milvus-tok-1a2b3c"
    env = {"AVREC_KAFKA__SASL_PASSWORD": secret_pw, "AVREC_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "AVREC_KAFKA__SASL_USERNAME": "avrec", "AVREC_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
           "AVREC_MILVUS__TOKEN": secret_token}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.kafka.sasl_password.get_secret_value() == secret_pw  # usable where needed
    assert s.kafka.kafka_python_config()["sasl_plain_password"] == secret_pw
    for text in (repr(s), str(s), orjson.dumps(s.masked_dump()).decode()):
        assert secret_pw not in text and secret_token not in text
    out = subprocess.run([sys.executable, "-m", "streams", "config", "show"], capture_output=True, text=True,
                         timeout=60, env={**__import__("os").environ, **env})
    assert out.returncode == 0, out.stderr
    assert secret_pw not in out.stdout + out.stderr and secret_token not in out.stdout + out.stderr
    shown = orjson.loads(out.stdout)
    assert shown["kafka"]["sasl_password"] == "**********" and shown["milvus"]["token"] == "**********"
    assert shown["kafka"]["security_protocol"] == "SASL_SSL"


def test_impressions_follow_the_interactions_partitions_unless_set(monkeypatch):
    """Impressions must be co-partitioned with interactions: changing one count moves both."""
    monkeypatch.setenv("AVREC_KAFKA__TOPICS__INTERACTIONS__PARTITIONS", "6")
    t = Settings().kafka.topics
    assert t.interactions.partitions == t.impressions.partitions == 6
    assert t.impressions.name == "impressions"
    monkeypatch.setenv("AVREC_KAFKA__TOPICS__IMPRESSIONS__PARTITIONS", "4")  # set on its own: kept (and refused at start)
    assert Settings().kafka.topics.impressions.partitions == 4
