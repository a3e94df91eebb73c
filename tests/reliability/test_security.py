"""Security settings: Kafka SASL_SSL/SCRAM, a Milvus token and Triton over TLS, end to end.

* A second, real Kafka broker (the launcher's own ``KafkaBroker``, reconfigured)
  listens with **SASL_SSL and SCRAM-SHA-512 only**, with a certificate from a CA
  made for the test (openssl). Triton is reached through a TLS-terminating
  proxy in front of the session's Triton (Triton serves gRPC TLS natively; HTTP
  TLS is terminated in front of it in production too). Milvus gets a token.
* A real worker runs against all three at DEBUG log level; uploads produced over
  SASL_SSL reach Milvus, so every setting is really used. The worker's whole
  log, this process's log records (kafka-python at DEBUG included) and
  ``avrec config show`` never contain the Kafka password or the Milvus token.
* Wiring, precisely: the settings land in kafka-python's config, in the Faust
  app's broker credentials as aiokafka receives them, in pymilvus' connection
  and in tritonclient's TLS options; a wrong CA or a wrong password fails.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

log = logging.getLogger(__name__)

KAFKA_USER = "avrec-svc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost signed by it, and an unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=avrec-test-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other-ca.pem",
             "-days", "2", "-subj", "/CN=some-other-ca", cwd=d)
    # Kafka's PEM key store: the (unencrypted PKCS#8) key followed by the certificate chain.
    (d / "keystore.pem").write_text((d / "server.key").read_text() + (d / "server.pem").read_text())
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key",
            "keystore": d / "keystore.pem", "other_ca": d / "other-ca.pem"}


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {"kafka_password": f"kafka-pw-{tag}-Zq", "milvus_token": f"root:milvus-tok-{tag}-Xy"}


# ------------------------------------------------------------------ a TLS front for Triton


class TLSProxy:
    """Terminates TLS on a loopback port and forwards the bytes to ``target`` (threads; test use only)."""

    def __init__(self, cert: Path, key: Path, target: tuple[str, int], alpn: list[str] | None = None) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        if alpn:
            self.ctx.set_alpn_protocols(alpn)
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.handshakes_failed = 0
        self.connections = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            raw.close()
            return
        self.connections += 1
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            tls.close()
            return
        upstream.settimeout(None)

        def pump(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pump, args=(upstream, tls), daemon=True)
        t.start()
        pump(tls, upstream)
        t.join(30)
        tls.close()
        upstream.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture(scope="module")
def triton_tls(stack, settings, pki):
    st = settings.stack
    http = TLSProxy(pki["cert"], pki["key"], (st.host, st.triton_http_port))
    grpc = TLSProxy(pki["cert"], pki["key"], (st.host, st.triton_grpc_port), alpn=["h2"])
    yield {"http": http, "grpc": grpc}
    http.close()
    grpc.close()


# ------------------------------------------------------------------ a SASL_SSL / SCRAM broker


@pytest.fixture(scope="module")
def scram_broker(stack, settings, pki, secrets, tmp_path_factory):
    """A second real broker: SASL_SSL + SCRAM-SHA-512 for clients, PLAINTEXT only between its own roles."""
    from deploy.local.kafka_broker import KafkaBroker
    from streams.settings import KafkaSettings

    port, controller, internal = free_port(), free_port(), free_port()
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username=KAFKA_USER, sasl_password=secrets["kafka_password"], ssl_cafile=pki["ca"],
    )
    secure = settings.model_copy(update={
        "kafka": kafka,
        "stack": settings.stack.model_copy(update={
            "state_dir": tmp_path_factory.mktemp("scram-stack"), "kafka_port": port,
            "kafka_controller_port": controller, "kafka_heap": "384m"}),
    })

    class ScramBroker(KafkaBroker):
        def write_properties(self) -> None:
            super().write_properties()
            props = dict(line.split("=", 1) for line in self.properties_file.read_text().splitlines() if line)
            props.update({
                "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},"
                             f"INTERNAL://127.0.0.1:{internal}",
                "advertised.listeners": f"SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
                "inter.broker.listener.name": "INTERNAL",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(pki["keystore"]),
            })
            self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

        def format_storage(self, java: str) -> None:
            if (self.data_dir / "meta.properties").exists():
                return
            from deploy.local.kafka_broker import LOG4J, _kafka_uuid

            # KRaft stores SCRAM credentials in its metadata log: they are added when formatting.
            cmd = [java, "-cp", f"{self.libs_dir}/*", f"-Dlog4j2.configurationFile={LOG4J}",
                   "kafka.tools.StorageTool", "format", "-t", _kafka_uuid(), "-c", str(self.properties_file),
                   "--add-scram", f"SCRAM-SHA-512=[name={KAFKA_USER},password={secrets['kafka_password']}]"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr

    broker = ScramBroker(secure)
    try:
        broker.start_and_wait()  # its readiness probe is our admin client over SASL_SSL
    except BaseException:
        broker.stop()
        raise
    yield {"settings": secure, "port": port, "broker": broker}
    broker.stop()


# ------------------------------------------------------------------ helpers


def secure_env(scram_broker, triton_tls, pki, secrets, unique: str) -> dict[str, str]:
    from tests.workerproc import worker_env

    return worker_env(unique, {
        "AVREC_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{scram_broker['port']}",
        "AVREC_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "AVREC_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "AVREC_KAFKA__SASL_USERNAME": KAFKA_USER,
        "AVREC_KAFKA__SASL_PASSWORD": secrets["kafka_password"],
        "AVREC_KAFKA__SSL_CAFILE": str(pki["ca"]),
        "AVREC_MILVUS__TOKEN": secrets["milvus_token"],
        "AVREC_TRITON__SSL": "true",
        "AVREC_TRITON__SSL_CAFILE": str(pki["ca"]),
        "AVREC_TRITON__URL": f"127.0.0.1:{triton_tls['http'].port}",
    })


def assert_no_secret(text: str, secrets: dict[str, str], where: str) -> None:
    for name, value in secrets.items():
        # The raw value, and the forms a client could leak it in (base64 in an auth header, repr).
        forms = {value, base64.b64encode(value.encode()).decode(), repr(value)}
        for form in forms:
            assert form not in text, f"{name} appears in {where}"


# ------------------------------------------------------------------ tests


@pytest.mark.stack
def test_worker_over_sasl_ssl_tls_and_token_never_logs_a_secret(
        scram_broker, triton_tls, pki, secrets, tmp_path, caplog):
    from kafka import KafkaProducer

    from streams.vectors.milvus import milvus_client
    from streams.worker_process import free_port
    from tests.workerproc import READY_MARK, WorkerProcess

    caplog.set_level(logging.DEBUG)  # every logger of this process, kafka-python's included
    unique = "sec" + uuid.uuid4().hex[:8]
    env = secure_env(scram_broker, triton_tls, pki, secrets, unique)
    w = WorkerProcess(env, tmp_path / "worker.log")
    env.setdefault("AVREC_WEB__PORT", str(free_port()))  # started by hand below, not by w.start()
    s = w.settings
    assert s.kafka.security_protocol == "SASL_SSL" and s.triton.ssl and s.milvus.token is not None

    # Like WorkerProcess.start, at DEBUG: the most a worker ever logs.
    from streams.kafka.admin import ensure_topics

    ensure_topics(s.kafka, s.kafka.topics.all())
    with open(w.log_path, "ab") as logf:
        w.proc = subprocess.Popen([sys.executable, "-m", "streams", "worker", "-l", "debug"],
                                  env={**os.environ, **env, "AVREC_LOG_LEVEL": "DEBUG"}, stdout=logf,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while READY_MARK not in w.new_log():
            assert w.alive(), f"worker exited:\n{w.tail()}"
            assert time.monotonic() < deadline, f"worker not ready:\n{w.tail()}"
            time.sleep(0.3)

        items = [{"event_id": f"sec-{k}", "item_id": f"sec{k}", "creator_id": "c", "title": title,
                  "tags": ["secure"], "created_at": time.time() - 60}
                 for k, title in enumerate(["encrypted jazz session", "tls handshake explained", "scram recipe"])]
        producer = KafkaProducer(**s.kafka.kafka_python_config(), acks="all")
        for it in items:
            producer.send(s.kafka.topics.uploads.name, key=it["item_id"].encode(), value=orjson.dumps(it))
        producer.flush(30)
        producer.close()

        client = milvus_client(s.milvus)
        try:
            deadline = time.monotonic() + 90
            while True:
                if client.has_collection(s.milvus.items_collection) and len(client.get(
                        s.milvus.items_collection, ids=[i["item_id"] for i in items],
                        output_fields=["item_id"])) == len(items):
                    break
                assert w.alive(), f"worker died:\n{w.tail()}"
                assert time.monotonic() < deadline, f"uploads never reached Milvus:\n{w.tail(80)}"
                time.sleep(0.5)
        finally:
            client.close()
        assert triton_tls["http"].connections > 0, "the worker did not reach Triton through TLS"
    finally:
        w.stop()
        try:
            w.drop_collections()
        except Exception as exc:  # noqa: BLE001 - cleanup only
            log.warning("could not drop the test collections: %s", exc)

    worker_log = w.log_path.read_text(errors="replace")
    assert len(worker_log) > 10_000, "suspiciously little DEBUG output"
    assert "SASL" in worker_log or "sasl" in worker_log.lower()  # the log did cover the authentication
    assert_no_secret(worker_log, secrets, "the worker's log")
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), secrets, "this process's log records")

    shown = subprocess.run([sys.executable, "-m", "streams", "config", "show"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, **env})
    assert shown.returncode == 0, shown.stderr
    assert_no_secret(shown.stdout + shown.stderr, secrets, "`avrec config show`")
    cfg = orjson.loads(shown.stdout)
    assert cfg["kafka"]["sasl_password"] == "**********" and cfg["milvus"]["token"] == "**********"
    assert cfg["kafka"]["sasl_mechanism"] == "SCRAM-SHA-512" and cfg["triton"]["ssl"] is True


@pytest.mark.stack
def test_the_scram_broker_refuses_a_wrong_password_or_an_unknown_ca(scram_broker, pki, secrets, caplog):
    from streams.kafka.admin import broker_ready

    caplog.set_level(logging.DEBUG)
    good = scram_broker["settings"].kafka
    assert broker_ready(good, timeout_s=10)
    wrong_pw = good.model_copy(update={"sasl_password": good.sasl_password.__class__("not-the-password")})
    assert not broker_ready(wrong_pw, timeout_s=5)
    wrong_ca = good.model_copy(update={"ssl_cafile": pki["other_ca"]})
    assert not broker_ready(wrong_ca, timeout_s=5)
    plaintext = good.model_copy(update={"security_protocol": "PLAINTEXT", "sasl_mechanism": None})
    assert not broker_ready(plaintext, timeout_s=5)
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), secrets, "kafka-python's log")


@pytest.mark.stack
@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_triton_client_over_tls_verifies_the_server(protocol, triton_tls, pki):
    from encoders.client import TritonClient
    from streams.settings import TritonSettings

    port = triton_tls[protocol].port
    ok = TritonClient(TritonSettings(url=f"127.0.0.1:{port}", protocol=protocol, ssl=True, ssl_cafile=pki["ca"],
                                     timeout_s=30))
    try:
        assert ok.url.startswith("https://" if protocol == "http" else "grpcs://")
        assert await ok.ready("item_encoder")
        vecs = await ok.encode_texts(["over tls"])
        assert vecs.shape[0] == 1
    finally:
        await ok.close()
    bad = TritonClient(TritonSettings(url=f"127.0.0.1:{port}", protocol=protocol, ssl=True,
                                      ssl_cafile=pki["other_ca"], timeout_s=5))
    try:
        assert not await bad.ready(), "a server whose certificate is not from the configured CA was accepted"
    finally:
        await bad.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_security_settings_reach_every_client(monkeypatch, pki, secrets, mechanism):
    """The wiring, precisely: kafka-python, Faust/aiokafka, pymilvus and tritonclient get what the settings say."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.app import create_app
    from streams.settings import Settings

    env = {"AVREC_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "AVREC_KAFKA__SASL_MECHANISM": mechanism,
           "AVREC_KAFKA__SASL_USERNAME": KAFKA_USER, "AVREC_KAFKA__SASL_PASSWORD": secrets["kafka_password"],
           "AVREC_KAFKA__SSL_CAFILE": str(pki["ca"]), "AVREC_MILVUS__TOKEN": secrets["milvus_token"],
           "AVREC_TRITON__SSL": "true", "AVREC_TRITON__SSL_CAFILE": str(pki["ca"]),
           "AVREC_TRITON__PROTOCOL": "grpc"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()

    kp = s.kafka.kafka_python_config()
    assert kp["security_protocol"] == "SASL_SSL" and kp["sasl_mechanism"] == mechanism
    assert kp["sasl_plain_username"] == KAFKA_USER and kp["sasl_plain_password"] == secrets["kafka_password"]
    assert kp["ssl_cafile"] == str(pki["ca"]) and kp["ssl_check_hostname"] is True

    app = create_app(s)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == mechanism
    assert auth["sasl_plain_username"] == KAFKA_USER and auth["sasl_plain_password"] == secrets["kafka_password"]
    ctx = auth["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert any(dict(x[0] for x in c["subject"]).get("commonName") == "avrec-test-ca" for c in ctx.get_ca_certs())
    assert secrets["kafka_password"] not in repr(app.conf.broker_credentials)

    # pymilvus: the token becomes the connection's authorization header (base64), nowhere else.
    import pymilvus

    seen = {}
    real_init = pymilvus.MilvusClient.__init__

    def spy(self, *a, **kw):
        seen.update(kw)
        raise pymilvus.exceptions.MilvusException(message="stop here")

    monkeypatch.setattr(pymilvus.MilvusClient, "__init__", spy)
    from streams.exceptions import VectorStoreError
    from streams.vectors.milvus import milvus_client

    with pytest.raises(VectorStoreError) as err:
        milvus_client(s.milvus)
    assert seen["token"] == secrets["milvus_token"]
    assert secrets["milvus_token"] not in str(err.value)
    monkeypatch.setattr(pymilvus.MilvusClient, "__init__", real_init)

    # tritonclient: gRPC gets TLS with our CA; HTTP gets a verifying SSL context with our CA.
    import tritonclient.grpc.aio as grpc_aio

    from encoders.client import TritonClient

    captured = {}

    class FakeGrpc:
        def __init__(self, **kw):
            captured.update(kw)

    monkeypatch.setattr(grpc_aio, "InferenceServerClient", FakeGrpc)
    TritonClient(s.triton)._raw()
    assert captured["ssl"] is True and captured["root_certificates"] == str(pki["ca"])
    http_ctx = s.triton.model_copy(update={"protocol": "http"}).ssl_context()
    assert http_ctx.verify_mode == ssl.CERT_REQUIRED and http_ctx.check_hostname
    assert any(dict(x[0] for x in c["subject"]).get("commonName") == "avrec-test-ca"
               for c in http_ctx.get_ca_certs())


def test_tls_without_sasl_reaches_faust(monkeypatch, pki):
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.app import create_app
    from streams.settings import Settings

    monkeypatch.setenv("AVREC_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("AVREC_KAFKA__SSL_CAFILE", str(pki["ca"]))
    s = Settings()
    assert s.kafka.kafka_python_config()["security_protocol"] == "SSL"
    auth = credentials_to_aiokafka_auth(create_app(s).conf.broker_credentials)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)


def test_inconsistent_security_settings_are_rejected(monkeypatch):
    from pydantic import ValidationError

    from streams.settings import KafkaSettings, TritonSettings

    with pytest.raises(ValidationError, match="sasl_password"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u")
    with pytest.raises(ValidationError, match="SECURITY_PROTOCOL"):
        KafkaSettings(sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="p")
    with pytest.raises(ValidationError, match="ssl is off"):
        TritonSettings(ssl_cafile="/tmp/ca.pem")
    with pytest.raises(ValidationError, match="both"):
        TritonSettings(ssl=True, ssl_certfile="/tmp/c.pem")
    assert KafkaSettings().kafka_python_config()["security_protocol"] == "PLAINTEXT"
    assert "ssl_cafile" not in KafkaSettings().kafka_python_config()


def test_kafka_cluster_ids_never_look_like_an_option():
    """1 in 64 random ids started with '-', which the storage tool read as an option (flaky SCRAM broker)."""
    from deploy.local.kafka_broker import _kafka_uuid

    ids = [_kafka_uuid() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
