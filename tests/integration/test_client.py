"""producer.Client against a real redis-server and a real (stand-in) Celery worker.

The stand-in task is registered under TASK_NAME on a test app and run by
``celery.contrib.testing.worker.start_worker``: it tests the producer's send and wait paths,
not the real worker.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping for start_worker)
import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from pydantic import SecretStr, ValidationError

from producer.client import (
    Client,
    PlaintextSecretRefusedError,
    ResultFormatError,
    ResultTimeoutError,
)
from producer.messages import (
    DEFAULT_QUEUE,
    RESULTS_STREAM,
    TASK_NAME,
    AddJob,
    CertificateData,
    InlineCredential,
    InventoryJob,
    Job,
    JobResult,
    RemoveJob,
    StoreRef,
    parse_job,
)
from producer.result_store import result_key
from producer.secrets import decrypt_secret, generate_key
from producer.settings import ProducerSettings
from worker.results import publish_result


@pytest.fixture
def settings(redis_url: str, redis_client: redis.Redis) -> ProducerSettings:
    return ProducerSettings(broker_url=redis_url)


@pytest.fixture
def client(settings: ProducerSettings) -> Iterator[Client]:
    with Client(settings) as producer:
        yield producer


def inventory_job(**store: Any) -> InventoryJob:
    fields: dict[str, Any] = {
        "store_type": "WinCert",
        "client_machine": "web01.contoso.com",
        "store_path": "My",
    }
    fields.update(store)
    return InventoryJob(job_type="inventory", store=StoreRef(**fields))


def queued(client: redis.Redis, queue: str = DEFAULT_QUEUE) -> list[dict[str, Any]]:
    """The Celery messages on ``queue`` (oldest first) with their body decoded."""
    messages = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        envelope["decoded"] = json.loads(base64.b64decode(envelope["body"]))
        messages.append(envelope)
    return messages


def result_for(job: dict[str, Any], **changes: Any) -> JobResult:
    values: dict[str, Any] = {
        "job_id": job["job_id"],
        "job_type": job["job_type"],
        "store_type": job["store"]["store_type"],
        "client_machine": job["store"]["client_machine"],
        "store_path": job["store"]["store_path"],
        "status": "success",
        "code": "ok",
        "message": "0 certificates in My",
        "items": [],
        "worker": "stand-in",
    }
    values.update(changes)
    return JobResult.model_validate(values)


# --- submit ----------------------------------------------------------------------------------


def test_submit_puts_exactly_one_celery_message_with_the_job(
    client: Client, redis_client: redis.Redis
) -> None:
    job = inventory_job(credential={"kind": "named", "name": "ops"})
    job_id = client.submit(job)
    assert job_id == job.job_id
    (message,) = queued(redis_client)
    assert redis_client.llen(DEFAULT_QUEUE) == 1
    assert message["content-type"] == "application/json"
    assert message["headers"]["task"] == TASK_NAME
    assert message["headers"]["id"] == str(job_id)
    assert message["properties"]["correlation_id"] == str(job_id)
    assert message["properties"]["delivery_info"]["routing_key"] == DEFAULT_QUEUE
    args, kwargs, _embed = message["decoded"]
    assert kwargs == {}
    (sent,) = args
    assert sent["submitted_at"] is not None
    assert datetime.fromisoformat(sent["submitted_at"].replace("Z", "+00:00")).tzinfo is not None
    expected = job.model_copy(update={"submitted_at": parse_job(sent).submitted_at}).model_dump(mode="json")
    assert sent == expected
    assert message["headers"]["argsrepr"] == (
        f"[<inventory job {job_id}: WinCert 'My' on web01.contoso.com:5986>]"
    )


def test_submit_keeps_a_given_submitted_at(client: Client, redis_client: redis.Redis) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    job = inventory_job().model_copy(update={"submitted_at": when})
    client.submit(job)
    (message,) = queued(redis_client)
    assert parse_job(message["decoded"][0][0]).submitted_at == when


@pytest.mark.parametrize("form", ["dict", "json", "root"])
def test_submit_accepts_dicts_json_text_and_the_root_model(
    client: Client, redis_client: redis.Redis, form: str
) -> None:
    job = inventory_job()
    data = job.model_dump(mode="json")
    given: Any = {"dict": data, "json": json.dumps(data), "root": Job(job)}[form]
    assert client.submit(given) == job.job_id
    (message,) = queued(redis_client)
    assert message["headers"]["id"] == str(job.job_id)


def test_invalid_job_raises_naming_the_field_and_enqueues_nothing(
    client: Client, redis_client: redis.Redis
) -> None:
    data = inventory_job().model_dump(mode="json")
    data["store"]["port"] = 70000
    data["store"]["client_machine"] = "web 01"
    with pytest.raises(ValidationError) as info:
        client.submit(data)
    assert [e["loc"] for e in info.value.errors()] == [
        ("inventory", "store", "client_machine"),
        ("inventory", "store", "port"),
    ]
    assert redis_client.dbsize() == 0


def test_model_construct_is_revalidated(client: Client, redis_client: redis.Redis) -> None:
    good = inventory_job()
    bad_store = StoreRef.model_construct(**{**good.store.__dict__, "store_path": "My\n"})
    bad = InventoryJob.model_construct(**{**good.__dict__, "store": bad_store})
    with pytest.raises(ValidationError) as info:
        client.submit(bad)
    assert info.value.errors()[0]["loc"] == ("inventory", "store", "store_path")
    assert redis_client.dbsize() == 0


def test_plaintext_password_is_refused_unless_allowed(redis_url: str, redis_client: redis.Redis) -> None:
    credential = InlineCredential(kind="inline", username="bob", password_plaintext=SecretStr("pt-secret"))
    job = inventory_job(credential=credential)
    with Client(ProducerSettings(broker_url=redis_url)) as strict:
        with pytest.raises(PlaintextSecretRefusedError) as info:
            strict.submit(job)
        assert "WINCERT_ALLOW_PLAINTEXT_SECRETS=true" in str(info.value)
        assert "WINCERT_SECRET_KEYS" in str(info.value)
        assert "pt-secret" not in str(info.value)
        assert redis_client.dbsize() == 0
        with pytest.raises(PlaintextSecretRefusedError):
            strict.submit(job.model_dump(mode="json"))
        assert redis_client.dbsize() == 0
    with Client(ProducerSettings(broker_url=redis_url, allow_plaintext_secrets=True)) as lenient:
        lenient.submit(job)
    (message,) = queued(redis_client)
    assert message["decoded"][0][0]["store"]["credential"]["password_plaintext"] == "pt-secret"
    assert "pt-secret" not in message["headers"]["argsrepr"]


def test_inline_credential_encrypts_with_the_first_key(redis_url: str) -> None:
    first, second = generate_key(), generate_key()
    with Client(
        ProducerSettings(broker_url=redis_url, secret_keys=SecretStr(f"{first}, {second}"))
    ) as client:
        credential = client.inline_credential("CONTOSO\\svc", "p@ss")
    assert credential.password_plaintext is None
    assert credential.password_encrypted is not None
    assert decrypt_secret(credential.password_encrypted, first) == "p@ss"
    assert "p@ss" not in repr(credential)


def test_inline_credential_without_keys(redis_url: str) -> None:
    with (
        Client(ProducerSettings(broker_url=redis_url)) as strict,
        pytest.raises(PlaintextSecretRefusedError, match="WINCERT_SECRET_KEYS is not set"),
    ):
        strict.inline_credential("bob", "pw")
    with Client(ProducerSettings(broker_url=redis_url, allow_plaintext_secrets=True)) as lenient:
        credential = lenient.inline_credential("bob", SecretStr("pw"))
    assert credential.password_plaintext is not None
    assert credential.password_plaintext.get_secret_value() == "pw"


# --- certificate data (Management Add) ---------------------------------------------------------

PFX_LIKE = bytes(range(256)) * 3  # any bytes: the producer does not parse the file
PEM_TEXT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


def add_job(certificate: CertificateData, store_type: str = "WinCert", **fields: Any) -> AddJob:
    store = StoreRef(store_type=store_type, client_machine="web01.contoso.com", store_path="My")
    return AddJob(job_type="add", store=store, certificate=certificate, **fields)


def test_certificate_data_seals_the_file_as_base64_and_the_password(redis_url: str) -> None:
    first, second = generate_key(), generate_key()
    with Client(ProducerSettings(broker_url=redis_url, secret_keys=SecretStr(f"{first},{second}"))) as client:
        data = client.certificate_data(PFX_LIKE, "pfx-Secret")
        from_secret = client.certificate_data(PFX_LIKE, SecretStr("pfx-Secret"))
    assert data.contents_plaintext is None
    assert data.password_plaintext is None
    assert data.contents_encrypted is not None
    assert data.password_encrypted is not None
    assert decrypt_secret(data.contents_encrypted, first) == base64.b64encode(PFX_LIKE).decode("ascii")
    assert decrypt_secret(data.password_encrypted, first) == "pfx-Secret"
    assert from_secret.password_encrypted is not None
    assert decrypt_secret(from_secret.password_encrypted, first) == "pfx-Secret"
    assert not data.has_plaintext
    assert "pfx-Secret" not in repr(data)


def test_certificate_data_no_password_differs_from_the_empty_password(redis_url: str) -> None:
    key = generate_key()
    with Client(ProducerSettings(broker_url=redis_url, secret_keys=SecretStr(key))) as client:
        none = client.certificate_data(PFX_LIKE, None)
        empty = client.certificate_data(PFX_LIKE, "")
    assert none.password_encrypted is None
    assert none.password_plaintext is None
    assert "password_encrypted" not in none.model_dump(exclude_none=True)
    assert empty.password_encrypted is not None
    assert decrypt_secret(empty.password_encrypted, key) == ""


def test_certificate_data_sends_text_as_it_is(redis_url: str) -> None:
    key = generate_key()
    with Client(ProducerSettings(broker_url=redis_url, secret_keys=SecretStr(key))) as client:
        data = client.certificate_data(PEM_TEXT, None)
        with pytest.raises(ValueError, match="the certificate file is empty"):
            client.certificate_data(b" \r\n", None)
        with pytest.raises(ValueError, match="the certificate text is empty"):
            client.certificate_data("", "pw")
    assert data.contents_encrypted is not None
    assert decrypt_secret(data.contents_encrypted, key) == PEM_TEXT


def test_certificate_data_plaintext_only_when_allowed(redis_url: str) -> None:
    with (
        Client(ProducerSettings(broker_url=redis_url)) as strict,
        pytest.raises(PlaintextSecretRefusedError) as info,
    ):
        strict.certificate_data(PFX_LIKE, "pw")
    assert "WINCERT_SECRET_KEYS is not set" in str(info.value)
    assert "WINCERT_ALLOW_PLAINTEXT_SECRETS=true" in str(info.value)
    with Client(ProducerSettings(broker_url=redis_url, allow_plaintext_secrets=True)) as lenient:
        data = lenient.certificate_data(PFX_LIKE, "")
    assert data.contents_encrypted is None
    assert data.contents_plaintext is not None
    assert data.contents_plaintext.get_secret_value() == base64.b64encode(PFX_LIKE).decode("ascii")
    assert data.password_plaintext is not None
    assert data.password_plaintext.get_secret_value() == ""
    assert data.has_plaintext


@pytest.mark.parametrize(
    ("certificate", "named"),
    [
        (CertificateData(contents_plaintext=SecretStr("TUlJ")), "certificate.contents_plaintext"),
        (
            CertificateData(contents_encrypted="token", password_plaintext=SecretStr("pt-pfx")),
            "certificate.password_plaintext",
        ),
    ],
)
def test_prepare_refuses_a_plaintext_certificate_unless_allowed(
    redis_url: str, redis_client: redis.Redis, certificate: CertificateData, named: str
) -> None:
    job = add_job(certificate)
    with Client(ProducerSettings(broker_url=redis_url)) as strict:
        for given in (job, job.model_dump(mode="json"), job.model_dump_json()):
            with pytest.raises(PlaintextSecretRefusedError) as info:
                strict.submit(given)
            assert str(info.value).startswith(f"{named}: ")
            assert "WINCERT_SECRET_KEYS" in str(info.value)
            assert "WINCERT_ALLOW_PLAINTEXT_SECRETS=true" in str(info.value)
            assert "pt-pfx" not in str(info.value)
    assert redis_client.dbsize() == 0
    with Client(ProducerSettings(broker_url=redis_url, allow_plaintext_secrets=True)) as lenient:
        lenient.submit(job)
    (message,) = queued(redis_client)
    assert parse_job(message["decoded"][0][0]) == job.model_copy(
        update={"submitted_at": parse_job(message["decoded"][0][0]).submitted_at}
    )
    assert "pt-pfx" not in message["headers"]["argsrepr"]


def test_submitted_add_job_carries_the_certificate_only_encrypted(
    redis_url: str, redis_client: redis.Redis
) -> None:
    key = generate_key()
    with Client(ProducerSettings(broker_url=redis_url, secret_keys=SecretStr(key))) as client:
        job = add_job(
            client.certificate_data(PFX_LIKE, "pfx-Secret"),
            store_type="IISU",
            entry_parameters={"IPAddress": "2001:db8:0::1", "HostName": "WWW.Contoso.com", "SniFlag": "1"},
        )
        client.submit(job)
        removal = RemoveJob(
            job_type="remove",
            store=StoreRef(store_type="WinSQL", client_machine="sql01", store_path="My"),
            alias="ab" * 20,
            entry_parameters={"InstanceName": "MSSQLSERVER,INST2"},
        )
        client.submit(removal)
    raw = redis_client.lrange(DEFAULT_QUEUE, 0, -1)
    assert len(raw) == 2
    as_base64 = base64.b64encode(PFX_LIKE).decode("ascii")
    for text in raw:
        assert as_base64[:64] not in text
        assert "pfx-Secret" not in text
    added, removed = (message["decoded"][0][0] for message in queued(redis_client))
    assert added["entry_parameters"]["IPAddress"] == "[2001:db8::1]"
    assert added["entry_parameters"]["HostName"] == "www.contoso.com"
    assert decrypt_secret(added["certificate"]["contents_encrypted"], key) == as_base64
    assert removed["alias"] == "AB" * 20
    assert removed["entry_parameters"]["InstanceName"] == ["MSSQLSERVER", "INST2"]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINCERT_BROKER_URL", "redis://redis.internal:6380/2")
    monkeypatch.setenv("WINCERT_QUEUE", "wincert-bulk")
    monkeypatch.setenv("WINCERT_SECRET_KEYS", "k1,k2")
    monkeypatch.setenv("WINCERT_ALLOW_PLAINTEXT_SECRETS", "1")
    monkeypatch.delenv("WINCERT_RESULT_BACKEND", raising=False)
    settings = ProducerSettings()
    assert settings.result_backend == "redis://redis.internal:6380/2"
    assert settings.queue == "wincert-bulk"
    assert settings.allow_plaintext_secrets is True
    assert settings.has_secret_keys
    assert "k1" not in repr(settings)


# --- results stream --------------------------------------------------------------------------


def test_iter_results_reads_stream_entries_in_order(client: Client, redis_client: redis.Redis) -> None:
    jobs = [inventory_job().model_dump(mode="json") for _ in range(3)]
    results = [result_for(job) for job in jobs]
    ids = [str(redis_client.xadd(RESULTS_STREAM, {"result": r.model_dump_json()})) for r in results]
    got = list(client.iter_results(from_id="0", block_ms=100, stop_when_idle=True))
    assert got == list(zip(ids, results, strict=True))
    after_first = list(client.iter_results(from_id=ids[0], block_ms=100, stop_when_idle=True))
    assert [r for _, r in after_first] == results[1:]


def test_iter_results_skips_malformed_entries(
    client: Client, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    good = result_for(inventory_job().model_dump(mode="json"))
    bad_json = str(redis_client.xadd(RESULTS_STREAM, {"result": "{not json"}))
    no_field = str(redis_client.xadd(RESULTS_STREAM, {"other": "x"}))
    good_id = str(redis_client.xadd(RESULTS_STREAM, {"result": good.model_dump_json()}))
    assert list(client.iter_results(from_id="0", block_ms=100, stop_when_idle=True)) == [(good_id, good)]
    assert f"results stream entry {bad_json} is not a JobResult" in caplog.text
    assert f"results stream entry {no_field} has no 'result' and no valid reference" in caplog.text


def test_iter_results_dollar_yields_only_new_entries(client: Client, redis_client: redis.Redis) -> None:
    old = result_for(inventory_job().model_dump(mode="json"))
    new = result_for(inventory_job().model_dump(mode="json"))
    redis_client.xadd(RESULTS_STREAM, {"result": old.model_dump_json()})
    stream = client.iter_results(block_ms=5000)  # "$" is resolved here
    new_id = str(redis_client.xadd(RESULTS_STREAM, {"result": new.model_dump_json()}))  # before next()
    stream_id, first = next(stream)
    assert stream_id == new_id
    assert first == new
    later = result_for(inventory_job().model_dump(mode="json"))
    timer = threading.Timer(
        0.2, lambda: redis_client.xadd(RESULTS_STREAM, {"result": later.model_dump_json()})
    )
    timer.start()
    try:
        assert next(stream)[1] == later  # arrives while XREAD blocks
    finally:
        timer.join()


def test_iter_results_rejects_non_positive_block(client: Client) -> None:
    with pytest.raises(ValueError, match="block_ms must be > 0"):
        client.iter_results(block_ms=0)


def test_result_falls_back_to_the_stream(client: Client, redis_client: redis.Redis) -> None:
    job = inventory_job().model_dump(mode="json")
    assert client.result(job["job_id"]) is None
    for _ in range(3):  # other jobs' entries, newer and older
        other = result_for(inventory_job().model_dump(mode="json"))
        redis_client.xadd(RESULTS_STREAM, {"result": other.model_dump_json()})
    mine = result_for(job, status="warning", code="partial", warnings=["skipped 1"])
    redis_client.xadd(RESULTS_STREAM, {"result": mine.model_dump_json()})
    redis_client.xadd(RESULTS_STREAM, {"result": other.model_dump_json()})
    assert client.result(uuid.UUID(job["job_id"])) == mine
    assert client.result(job["job_id"]) == mine


def test_wait_times_out_naming_the_job_and_the_follow_up(client: Client) -> None:
    job_id = uuid.uuid4()
    with pytest.raises(ResultTimeoutError) as info:
        client.wait(job_id, timeout=0.3)
    assert isinstance(info.value, TimeoutError)
    assert str(info.value) == (
        f"no result for job {job_id} after 0.3 s; it may still be queued or running. Check later"
        f" with `wincert result {job_id}` (or `--wait --timeout SECONDS`); `wincert status` shows the"
        " queue and the workers online, and a message the workers refused (not authenticated with"
        " WINCERT_SECRET_KEYS, malformed) is in `wincert dead list`"
    )


# --- a real Celery worker with a stand-in task --------------------------------------------------


@pytest.fixture
def stand_in_worker(redis_url: str, redis_client: redis.Redis) -> Iterator[list[dict[str, Any]]]:
    """A solo-pool Celery worker consuming the wincert queue with a stand-in TASK_NAME task.

    The task records the job dict it receives and publishes a JobResult as the real worker does
    (``worker.results.publish_result``: the kept copy and the stream entry); a job whose store
    path is ``Crash`` raises instead, and ``Garbage`` keeps something that is not a JobResult.
    """
    received: list[dict[str, Any]] = []
    app = Celery("stand-in", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        broker_connection_retry_on_startup=True,
    )

    # shared=False: a shared task would be added to every Celery app finalized later in this
    # test session (the real worker's app included) and shadow its TASK_NAME task.
    @app.task(name=TASK_NAME, shared=False, ignore_result=True)
    def run_job(job: dict[str, Any]) -> None:
        received.append(job)
        key = result_key(job["job_id"])
        if job["store"]["store_path"] == "Crash":
            raise RuntimeError("stand-in crashed")
        if job["store"]["store_path"] == "Garbage":
            redis_client.set(key, json.dumps({"job_id": job["job_id"], "status": "fine"}))
            return
        result = result_for(job, message=f"inventory of {job['store']['store_path']}")
        publish_result(redis_client, result, 1000, keep_as=key, expires=60)

    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=True, shutdown_timeout=10):
        yield received


def test_wait_receives_the_result_from_a_real_worker(
    client: Client, stand_in_worker: list[dict[str, Any]]
) -> None:
    job = inventory_job(store_path="WebHosting", protocol="http")
    job_id = client.submit(job)
    result = client.wait(job_id, timeout=30)
    assert result.job_id == job_id
    assert result.status == "success"
    assert result.message == "inventory of WebHosting"
    assert result.worker == "stand-in"
    (received,) = stand_in_worker
    assert parse_job(received).model_copy(update={"submitted_at": None}) == job
    assert client.result(job_id) == result  # non-blocking read of the kept result
    assert client.wait(str(job_id), timeout=5) == result


def test_a_task_that_raised_leaves_no_result(client: Client, stand_in_worker: list[dict[str, Any]]) -> None:
    """Celery's backend is not read: a task that raised (the real worker publishes an
    internal_error result instead) leaves the producer waiting until its timeout."""
    job_id = client.submit(inventory_job(store_path="Crash"))
    with pytest.raises(ResultTimeoutError):
        client.wait(job_id, timeout=3)
    assert [job["store"]["store_path"] for job in stand_in_worker] == ["Crash"]
    assert client.result(job_id) is None


def test_wait_reports_a_result_that_is_not_a_job_result(
    client: Client, stand_in_worker: list[dict[str, Any]]
) -> None:
    job_id = client.submit(inventory_job(store_path="Garbage"))
    with pytest.raises(
        ResultFormatError, match=rf"the stored result of job {job_id} is not a valid JobResult"
    ):
        client.wait(job_id, timeout=30)


def test_a_large_result_travels_by_reference_and_is_kept_compressed(
    client: Client, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Above WINCERT_RESULT_INLINE_BYTES the stream entry carries a reference (bounded in bytes)
    and the kept copy is gzip+base64; wait, result and iter_results read either form."""
    small = result_for(inventory_job().model_dump(mode="json"))
    large = result_for(inventory_job().model_dump(mode="json"), message="x" * 5000)
    for result in (small, large):
        publish_result(
            redis_client, result, 1000, keep_as=result_key(result.job_id), expires=60, inline_bytes=2048
        )
    (_, inline), (_, reference) = redis_client.xrange(RESULTS_STREAM)
    assert JobResult.model_validate_json(inline["result"]) == small
    assert inline["code"] == "ok" and "result_key" not in inline
    assert "result" not in reference
    assert reference["result_key"] == result_key(large.job_id)
    assert reference["encoding"] == "gzip+base64"
    assert int(reference["bytes"]) == len(large.model_dump_json())
    assert (reference["job_id"], reference["status"], reference["code"]) == (
        str(large.job_id),
        "success",
        "ok",
    )
    kept = redis_client.get(result_key(large.job_id))
    assert kept.startswith("H4sI") and len(kept) < 1000  # compressed, text-safe
    assert redis_client.get(result_key(small.job_id)) == small.model_dump_json()
    assert client.wait(large.job_id, timeout=1) == large
    assert client.result(small.job_id) == small
    assert [r for _, r in client.iter_results(from_id="0", block_ms=100, stop_when_idle=True)] == [
        small,
        large,
    ]
    # published once: a second publish of the same job adds nothing
    assert publish_result(redis_client, large, 1000, keep_as=result_key(large.job_id), expires=60) == ""
    assert redis_client.xlen(RESULTS_STREAM) == 2
    # a reference whose kept copy expired is skipped with a warning; the stream scan still finds
    # an inline entry
    redis_client.delete(result_key(large.job_id))
    with caplog.at_level(logging.WARNING, logger="producer.client"):
        assert [r for _, r in client.iter_results(from_id="0", block_ms=100, stop_when_idle=True)] == [small]
    assert "which expired (WINCERT_RESULT_EXPIRES)" in caplog.text
    assert client.result(large.job_id) is None


def test_hostile_kept_results_are_reported_not_raised_as_redis_errors(
    client: Client, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis writer's kept result of the wrong type, invalid base64 or corrupt gzip: wait and
    result raise ResultFormatError naming the job; iter_results logs and skips the entry (one
    poisoned entry does not stop the feed) and yields the next one."""
    good = result_for(inventory_job().model_dump(mode="json"))
    hostile = {
        "hash": lambda key: redis_client.hset(key, "a", "1"),
        "list": lambda key: redis_client.rpush(key, "x"),
        "bad base64": lambda key: redis_client.set(key, "H4sI!!!not base64"),
        "not gzip": lambda key: redis_client.set(key, "H4sIAAAA" + "A" * 8),
    }
    ids = []
    for kind, make in hostile.items():
        job_id = uuid.uuid4()
        key = result_key(job_id)
        make(key)
        with pytest.raises(ResultFormatError, match=str(job_id)):
            client.result(job_id)
        with pytest.raises(ResultFormatError, match=str(job_id)):
            client.wait(job_id, timeout=0.1)
        fields = {"job_id": str(job_id), "status": "success", "code": "ok", "result_key": key}
        ids.append((kind, str(redis_client.xadd(RESULTS_STREAM, {**fields, "encoding": "gzip+base64"}))))
    good_id = str(redis_client.xadd(RESULTS_STREAM, {"result": good.model_dump_json()}))
    with caplog.at_level(logging.WARNING, logger="producer.client"):
        got = list(client.iter_results(from_id="0", block_ms=100, stop_when_idle=True))
    assert got == [(good_id, good)]
    for _, entry_id in ids:
        assert f"results stream entry {entry_id}" in caplog.text


def test_a_job_hash_of_another_type_or_with_junk_fields_reads_as_queued_or_its_phase(
    client: Client, redis_client: redis.Redis
) -> None:
    """The job hash is untrusted: a key of another type reads as nothing recorded (PENDING),
    junk counts read as zero, an unknown phase as the slot tells."""
    job_id = uuid.uuid4()
    redis_client.set(f"wincert:job:{job_id}", "junk")
    assert client.task_state(job_id) == "PENDING"
    redis_client.delete(f"wincert:job:{job_id}")
    redis_client.hset(f"wincert:job:{job_id}", mapping={"attempts": "9" * 5000, "phase": "\x00" * 1000})
    assert client.task_state(job_id) == "PENDING"
    redis_client.hset(f"wincert:job:{job_id}", mapping={"attempts": "2", "phase": "retrying"})
    assert client.task_state(job_id) == "RETRY"
