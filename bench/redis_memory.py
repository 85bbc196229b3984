"""Redis memory per stored result and dead letter: `python -m bench.redis_memory`.

Writes real entries with the worker's own publishers into a private redis-server and reads
``MEMORY USAGE ... SAMPLES 0`` (exact) of each structure:

* the results stream ``wincert:results`` (``worker.results.publish_result``), for results without
  items (add/remove), and inventories of 10 and 100 certificates (real certificates from
  cryptography-vectors, DER in base64 as inventory carries them);
* the kept copy of a result (``wincert:job:<id>:result``, ``keep_as``: the one stored copy;
  JSON, or gzip+base64 above ``WINCERT_RESULT_INLINE_BYTES``, whose stream entry then carries a
  reference, :mod:`producer.result_store`);
* the dead-letter stream ``wincert:dead`` (``worker.results.dead_letter``) for a typical job.

Prints bytes per entry and the totals at the default caps (docs/operations.md, "Sizing Redis").
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from producer.codes import ResultCode
from producer.messages import DEAD_LETTER_STREAM, RESULTS_STREAM, CertificateItem, JobResult
from tests.support import redis_server, x509_vector_files
from worker.results import dead_letter, publish_result

ENTRIES = 500


def _certificates() -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path in x509_vector_files():
        data = path.read_bytes()
        try:
            loaded = x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [
                x509.load_der_x509_certificate(data)
            ]
        except ValueError:
            continue
        for cert in loaded:
            try:
                cert.public_bytes(Encoding.DER)
                _ = cert.not_valid_after_utc, cert.subject.rfc4514_string()
            except ValueError:
                continue
            certs.append(cert)
    return certs


def _item(cert: x509.Certificate) -> CertificateItem:
    der = cert.public_bytes(Encoding.DER)
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    return CertificateItem(
        alias=thumbprint,
        thumbprint=thumbprint,
        subject=cert.subject.rfc4514_string()[:512],
        issuer=cert.issuer.rfc4514_string()[:512],
        serial_number=format(cert.serial_number, "X"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        has_private_key=False,
        der_b64=base64.b64encode(der).decode(),
    )


def _result(items: list[CertificateItem] | None) -> JobResult:
    now = dt.datetime.now(dt.UTC)
    return JobResult(
        job_id=uuid.uuid4(),
        job_type="inventory" if items is not None else "add",
        store_type="WinCert",
        client_machine="web01.contoso.com",
        store_path="My",
        status="success",
        code=ResultCode.OK,
        message=f"Inventory of My: {len(items)} certificates" if items is not None else "Added",
        started_at=now,
        finished_at=now,
        duration_seconds=0.42,
        worker="wincert@worker-7d9f8b6c4-x2x9z",
        thumbprint=None if items is not None else "3B8D" * 10,
        items=items,
    )


def _usage(client: redis.Redis, key: str) -> int:
    return int(client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)


def measure(client: redis.Redis, url: str) -> dict[str, Any]:
    certs = _certificates()
    figures: dict[str, Any] = {"certificates_available": len(certs)}
    for label, count in (("no_items", None), ("inventory_10", 10), ("inventory_100", 100)):
        client.flushdb()
        items = None if count is None else [_item(certs[i % len(certs)]) for i in range(count)]
        json_bytes = 0
        for _ in range(ENTRIES):
            result = _result(items)
            json_bytes += len(result.model_dump_json())
            publish_result(client, result, maxlen=1_000_000, keep_as=f"wincert:job:{result.job_id}:result",
                           expires=86400)  # fmt: skip
        stream = _usage(client, RESULTS_STREAM)
        kept = sum(_usage(client, k) for k in client.scan_iter("wincert:job:*:result", count=1000))
        figures[label] = {
            "json_bytes_per_result": json_bytes // ENTRIES,
            "stream_bytes_per_entry": stream // ENTRIES,
            "stored_copy_bytes_per_result": kept // ENTRIES,
        }
    client.flushdb()
    job = {
        "job_id": str(uuid.uuid4()), "schema_version": 1, "job_type": "add",
        "store": {"store_type": "WinCert", "client_machine": "web01.contoso.com", "store_path": "My",
                  "protocol": "https", "port": 5986, "auth": "negotiate",
                  "credential": {"kind": "named", "name": "web-admins"}},
        "certificate": {"contents_encrypted": "gAAAAA" + "x" * 3000,
                        "password_encrypted": "gAAAAA" + "y" * 100},
    }  # fmt: skip
    for _ in range(ENTRIES):
        dead_letter(client, job=job, reason="max_deliveries", code=ResultCode.INTERNAL_ERROR,
                    message="delivered 5 times; the worker died each time", attempts=5,
                    worker="wincert@worker-1", maxlen=1_000_000, queue="wincert")  # fmt: skip
    figures["dead_letter_bytes_per_entry"] = _usage(client, DEAD_LETTER_STREAM) // ENTRIES
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.redis_memory", description=__doc__.split("\n\n")[0]
    )
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        client = redis.Redis.from_url(url)
        info = client.info("server")
        figures = {"redis_version": info["redis_version"], "entries_per_measure": ENTRIES}
        figures.update(measure(client, url))
        client.close()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
