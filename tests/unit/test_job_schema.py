"""The job and result JSON Schemas (issue 10 item 1): draft 2020-12 with $schema and $id,
compiling in Ajv's strict mode (real Node, real Ajv from the pinned tests/node/package-lock.json),
exactly as strict as the pydantic models on a shared corpus of jobs, and kept in step with the
files under schema/."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from producer.messages import CertificateItem, JobResult, parse_job
from producer.schema import JOB_SCHEMA_ID, RESULT_SCHEMA_ID, job_schema, result_schema, schema_text

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"
CORPUS_DIR = REPO / "tests" / "fixtures" / "schema-corpus"
CASES: list[dict[str, Any]] = json.loads((CORPUS_DIR / "jobs.json").read_text(encoding="utf-8"))


def ajv(schema_path: Path, documents: list[tuple[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Ajv 2020 in strict mode (``tests/node/validate.mjs``): ``{"verdicts": {name: bool}, ...}``."""
    node = shutil.which("node")
    assert node is not None, "node is missing: `make node` installs it (apt-get install nodejs npm)"
    assert (NODE_DIR / "node_modules" / "ajv").is_dir(), (
        "tests/node/node_modules is missing: `make node-deps` runs npm ci there"
    )
    docs = tmp_path / "documents.json"
    docs.write_text(json.dumps([{"name": n, "document": d} for n, d in documents]), encoding="utf-8")
    done = subprocess.run(
        [node, str(NODE_DIR / "validate.mjs"), str(schema_path), str(docs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def pydantic_accepts(document: Any) -> bool:
    try:
        parse_job(document)
    except ValidationError:
        return False
    return True


def test_schema_files_are_current() -> None:
    """schema/*.json are what `wincert schema` prints (regenerate: wincert schema [result] > ...)."""
    job_file, result_file = REPO / "schema" / "job.schema.json", REPO / "schema" / "result.schema.json"
    assert job_file.read_text(encoding="utf-8") == schema_text(job_schema()), (
        "the job models changed: update producer/schema_store.py or schema_jobs.py if a rule"
        " changed, then run"
        " `make schemas`"
    )
    assert result_file.read_text(encoding="utf-8") == schema_text(result_schema()), (
        "JobResult changed: run `make schemas` (wincert schema result > schema/result.schema.json)"
    )


def test_schemas_declare_draft_2020_12_and_an_id() -> None:
    for schema, schema_id in ((job_schema(), JOB_SCHEMA_ID), (result_schema(), RESULT_SCHEMA_ID)):
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == schema_id
        assert "discriminator" not in json.dumps(schema) and '"format"' not in json.dumps(schema)


def test_corpus_is_current_and_covers_every_job_and_store_type() -> None:
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS_DIR / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.CASES == CASES, "run: .venv/bin/python tests/fixtures/schema-corpus/make_corpus.py"
    assert len(CASES) >= 150
    objects = [c for c in CASES if isinstance(c["document"], dict)]
    for job_type in ("inventory", "add", "remove", "reenrollment", "reenrollment_complete"):
        for store_type in ("WinCert", "IISU", "WinSQL"):
            verdicts = {
                c["valid"]
                for c in objects
                if c["document"].get("job_type") == job_type
                and isinstance(c["document"].get("store"), dict)
                and c["document"]["store"].get("store_type") == store_type
            }
            assert True in verdicts, (job_type, store_type)
        assert False in {c["valid"] for c in objects if c["document"].get("job_type") == job_type}, job_type
    names = {c["name"] for c in CASES}
    assert {
        "issue/iisu-store-path-root",
        "issue/empty-client-machine",
        "issue/certificate-empty-object",
        "issue/add-alias-xyz",
    } <= names


def test_pydantic_gives_every_corpus_job_its_expected_verdict() -> None:
    wrong = [c["name"] for c in CASES if pydantic_accepts(c["document"]) is not c["valid"]]
    assert wrong == []


def test_ajv_strict_gives_every_corpus_job_the_verdict_pydantic_gives(tmp_path: Path) -> None:
    schema_path = REPO / "schema" / "job.schema.json"
    found = ajv(schema_path, [(c["name"], c["document"]) for c in CASES], tmp_path)
    wrong = {
        c["name"]: found["errors"].get(c["name"], "accepted")
        for c in CASES
        if found["verdicts"][c["name"]] is not c["valid"]
    }
    assert wrong == {}


def _results() -> list[tuple[str, Any, bool]]:
    item = CertificateItem(
        alias="A" * 40 + ":Default Web Site:*:443:",
        thumbprint="A" * 40,
        subject="CN=web01",
        issuer="CN=CA",
        serial_number="01",
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        not_after=datetime(2027, 1, 1, tzinfo=UTC),
        has_private_key=True,
        der_b64="MA==",
        parameters={"SiteName": "Default Web Site", "Port": "443"},
    )
    inventory = JobResult(
        job_id=uuid.uuid4(),
        job_type="inventory",
        store_type="IISU",
        client_machine="web01",
        store_path="WebHosting",
        status="success",
        code="ok",
        message="1 binding",
        started_at=datetime(2026, 12, 7, 16, 0, tzinfo=UTC),
        finished_at=datetime(2026, 12, 7, 16, 0, 1, tzinfo=UTC),
        duration_seconds=1.0,
        attempts=2,
        items=[item],
    ).model_dump(mode="json")
    failure = JobResult(
        job_id=uuid.uuid4(), job_type="add", status="failure", code="pfx_password_incorrect", message="x"
    ).model_dump(mode="json")
    return [
        ("inventory", inventory, True),
        ("failure", failure, True),
        (
            "reenrollment-csr",
            {
                **failure,
                "job_type": "reenrollment",
                "status": "success",
                "code": "ok",
                "csr": "-----BEGIN CERTIFICATE REQUEST-----",
            },
            True,
        ),
        ("status-unknown", {**failure, "status": "ok"}, False),
        ("code-unknown", {**failure, "code": "no_such_code"}, False),
        ("job-id-missing", {k: v for k, v in failure.items() if k != "job_id"}, False),
        ("extra-field", {**failure, "secret": "x"}, False),
        (
            "item-without-thumbprint",
            {**inventory, "items": [{**inventory["items"][0], "thumbprint": None}]},
            False,
        ),
    ]


def test_result_schema_compiles_strict_and_matches_the_result_model(tmp_path: Path) -> None:
    cases = _results()
    for name, document, valid in cases:
        try:
            JobResult.model_validate(document)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted is valid, name
    found = ajv(REPO / "schema" / "result.schema.json", [(n, d) for n, d, _ in cases], tmp_path)
    assert {n: found["verdicts"][n] for n, _, _ in cases} == {n: v for n, _, v in cases}


@pytest.mark.parametrize("kind", ["job", "result"])
def test_wincert_schema_prints_the_files(kind: str) -> None:
    from typer.testing import CliRunner

    from producer.cli import app

    out = CliRunner().invoke(app, ["schema", kind])
    assert out.exit_code == 0
    assert out.stdout == (REPO / "schema" / f"{kind}.schema.json").read_text(encoding="utf-8")
