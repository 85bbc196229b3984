"""``wincert status``, ``wincert expiring`` and ``wincert dead list|replay`` against a real Redis,
with dead letters and inventory state written by the worker's own code."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from producer.codes import ResultCode
from producer.messages import JobResult, JobType, Status, StoreRef
from tests.integration.test_inventory_state import NOW, item, make_cert, thumb
from tests.unit.cli_support import invoke_cli, queued
from worker.inventory_state import InventoryState
from worker.results import dead_letter, failure_result


def run(redis_url: str, *args: str, **env: str) -> Any:
    return invoke_cli(redis_url, list(args), columns="250", **env)


def inventory_job(host: str = "web01") -> dict[str, Any]:
    return {
        "job_type": "inventory",
        "job_id": str(uuid.uuid4()),
        "schema_version": 1,
        "store": {"store_type": "WinCert", "client_machine": host, "store_path": "My", "protocol": "http"},
    }


def write_dead(client: Any, job: dict[str, Any], reason: str = "max_deliveries", **extra: str) -> str:
    return dead_letter(
        client,
        job=job,
        reason=reason,
        code=ResultCode.INTERNAL_ERROR,
        message=extra.get("message", "the job was delivered 6 times without finishing"),
        attempts=6,
        worker="w1@box",
        maxlen=1000,
    )


def store_result(client: Any, job: dict[str, Any], status: Status, code: ResultCode) -> None:
    result = failure_result(uuid.UUID(job["job_id"]), JobType.INVENTORY, code, "x").model_copy(
        update={"status": status}
    )
    client.set(f"wincert:job:{job['job_id']}:result", result.model_dump_json())
    client.hset(f"wincert:job:{job['job_id']}", mapping={"attempts": 6, "d:0": 6})


def test_expiring_lists_soonest_first_as_table_and_json(redis_url: str, redis_client: Any) -> None:
    state = InventoryState(redis_client)
    soon, later, far = (
        make_cert(n, NOW + timedelta(days=d)) for n, d in (("soon", 2), ("later", 20), ("far", 200))
    )
    state.record_inventory(
        StoreRef(store_type="WinCert", client_machine="web01", store_path="My"),  # type: ignore[arg-type]
        [item(later), item(far)],
        NOW,
    )
    state.record_inventory(
        StoreRef(store_type="IISU", client_machine="web02", store_path="WebHosting"),  # type: ignore[arg-type]
        [item(soon, f"{thumb(soon)}:Shop:*:443:")],
        NOW,
    )
    out = run(redis_url, "expiring", "--within", "30d", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["subject_cn"] for r in rows] == ["soon", "later"]
    assert (
        rows[0]["host"] == "web02"
        and rows[0]["store_type"] == "IISU"
        and rows[0]["thumbprint"] == thumb(soon)
    )
    assert 0 < rows[0]["seconds_left"] <= 2 * 86400
    only = json.loads(
        run(redis_url, "expiring", "--within", "30d", "--store-type", "wincert", "--json").stdout
    )
    assert [r["subject_cn"] for r in only] == ["later"]
    table = run(redis_url, "expiring", "--within", "1w")
    assert table.exit_code == 0 and "soon" in table.stdout and "later" not in table.stdout
    bad = run(redis_url, "expiring", "--within", "soonish")
    assert bad.exit_code == 2 and "--within" in bad.output


def test_status_reports_queue_workers_hosts_and_dead_letters(redis_url: str, redis_client: Any) -> None:
    redis_client.lpush("wincert", "m1", "m2", "m3")
    redis_client.lpush("wincert\x06\x163", "m4")
    far = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp() * 1000)
    redis_client.zadd("wincert:sem:{web01}:holders", {"a": far, "b": far})
    redis_client.zadd("wincert:sem:{web02}:holders", {"c": far, "old": 1})  # an expired lease
    write_dead(redis_client, inventory_job())
    out = run(redis_url, "status", "--json", "--ping-timeout", "0.2")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["queue"] == {"name": "wincert", "waiting": 4, "unacked": 0}
    assert data["workers"] == []
    assert data["hosts"]["busiest"] == [
        {"host": "web01", "slots_in_use": 2},
        {"host": "web02", "slots_in_use": 1},
    ]
    assert data["dead_letters"]["count"] == 1 and data["dead_letters"]["newest_at"]
    text = run(redis_url, "status", "--ping-timeout", "0.2")
    assert "4 waiting" in text.stdout and "web01" in text.stdout and "dead letters: 1" in text.stdout


def test_dead_list_prints_hostile_text_as_text(redis_url: str, redis_client: Any) -> None:
    job = inventory_job()
    write_dead(redis_client, job, message="[bold red]boom[/] \x1b[31m")
    out = run(redis_url, "dead", "list")
    assert out.exit_code == 0, out.output
    assert "[bold red]boom[/]" in out.stdout and job["job_id"] in out.stdout
    listed = json.loads(run(redis_url, "dead", "list", "--json").stdout)
    assert listed[0]["job_id"] == job["job_id"] and listed[0]["reason"] == "max_deliveries"
    assert listed[0]["job"]["store"]["client_machine"] == "web01"


def test_replay_under_the_same_id_clears_the_failure_and_requeues(redis_url: str, redis_client: Any) -> None:
    job = inventory_job()
    entry = write_dead(redis_client, job)
    store_result(redis_client, job, Status.FAILURE, ResultCode.INTERNAL_ERROR)
    redis_client.set(f"celery-task-meta-{job['job_id']}", "{}")
    dry = run(redis_url, "dead", "replay", entry, "--dry-run")
    assert dry.exit_code == 0 and "would have" in dry.stderr and queued(redis_client) == []
    out = run(redis_url, "dead", "replay", entry)
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == job["job_id"]
    assert "same job id" in out.stderr and f"wincert result {job['job_id']} --wait" in out.stderr
    messages = queued(redis_client)
    assert [m["headers"]["id"] for m in messages] == [job["job_id"]]
    assert not redis_client.exists(
        f"wincert:job:{job['job_id']}",
        f"wincert:job:{job['job_id']}:result",
        f"celery-task-meta-{job['job_id']}",
    )
    listed = json.loads(run(redis_url, "dead", "list", "--json").stdout)
    assert listed[0]["replayed"].startswith(job["job_id"])
    # now that a message of the job is queued, the same id is not replayed again
    again = run(redis_url, "dead", "replay", job["job_id"])
    assert again.exit_code == 4 and "still queued" in again.stderr


def test_a_finished_job_is_replayed_only_under_a_new_id(redis_url: str, redis_client: Any) -> None:
    job = inventory_job()
    entry = write_dead(redis_client, job, reason="slot_deadline")
    store_result(redis_client, job, Status.SUCCESS, ResultCode.OK)
    refused = run(redis_url, "dead", "replay", entry)
    assert (
        refused.exit_code == 4
        and "finished with status success" in refused.stderr
        and "--new-id" in refused.stderr
    )
    assert queued(redis_client) == []
    out = run(redis_url, "dead", "replay", entry, "--new-id")
    assert out.exit_code == 0, out.output
    new_id = out.stdout.strip()
    assert new_id != job["job_id"] and [m["headers"]["id"] for m in queued(redis_client)] == [new_id]
    stored = JobResult.model_validate_json(redis_client.get(f"wincert:job:{job['job_id']}:result"))
    assert stored.status is Status.SUCCESS  # the old id keeps its result


def test_jobs_whose_secrets_were_removed_cannot_be_replayed(redis_url: str, redis_client: Any) -> None:
    add = {
        "job_type": "add",
        "job_id": str(uuid.uuid4()),
        "store": {"store_type": "WinCert", "client_machine": "web01", "store_path": "My"},
        "certificate": {"contents_encrypted": "gAAAA-secret", "password_encrypted": "gAAAA-secret"},
    }
    entry = write_dead(redis_client, add)
    out = run(redis_url, "dead", "replay", entry, "--new-id")
    assert out.exit_code == 4
    assert "secrets" in out.stderr and "from its source" in out.stderr
    assert "gAAAA" not in json.dumps(json.loads(run(redis_url, "dead", "list", "--json").stdout))
    invalid = write_dead(redis_client, {"job_type": "nope"}, reason="invalid_job")
    out = run(redis_url, "dead", "replay", invalid)
    assert out.exit_code == 4 and "does not validate" in out.stderr
    unknown = run(redis_url, "dead", "replay", "0-1")
    assert unknown.exit_code == 2


def test_producer_key_names_match_the_workers() -> None:
    from producer import dead_letters
    from worker.limits import holders_key
    from worker.state import JobState

    job_id = str(uuid.uuid4())
    state = JobState(None, job_id)  # type: ignore[arg-type]
    assert f"{dead_letters.JOB_STATE_PREFIX}{job_id}" == state.key
    assert f"{dead_letters.JOB_STATE_PREFIX}{job_id}:result" == state.result_key
    assert dead_letters.SLOT_KEY.format(host="web01") == holders_key("web01")


def test_piped_output_is_tab_separated_rows_never_wrapped(redis_url: str, redis_client: Any) -> None:
    """README "Scripting the CLI": stdout not a terminal and COLUMNS unset -> plain lines,
    tables as tab-separated rows under a header row, whatever the width of the values."""
    cert = make_cert("a-rather-long-common-name.web.contoso.com", NOW + timedelta(days=3))
    state = InventoryState(redis_client)
    state.record_inventory(
        StoreRef(store_type="WinCert", client_machine="web01.contoso.com", store_path="My"),  # type: ignore[arg-type]
        [item(cert)],
        NOW,
    )
    far = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp() * 1000)
    redis_client.zadd("wincert:sem:{web01.contoso.com}:holders", {"a": far})
    job = inventory_job()
    write_dead(redis_client, job, message="a message\twith a tab\nand a line break" + " that goes on" * 20)

    expiring = invoke_cli(redis_url, ["expiring", "--within", "30d"], columns="")
    assert expiring.exit_code == 0, expiring.output
    lines = expiring.stdout.splitlines()
    assert lines[0].split("\t") == [
        "Not after (UTC)", "Days left", "Host", "Store type", "Store path", "Subject CN", "Thumbprint"
    ]
    fields = lines[1].split("\t")
    assert len(lines) == 2 and fields[2:] == [
        "web01.contoso.com", "WinCert", "My", "a-rather-long-common-name.web.contoso.com", thumb(cert)
    ]

    status = invoke_cli(redis_url, ["status", "--ping-timeout", "0.2"], columns="")
    assert status.exit_code == 0, status.output
    assert status.stdout.splitlines()[-2:] == ["Host\tSlots in use", "web01.contoso.com\t1"]

    dead = invoke_cli(redis_url, ["dead", "list"], columns="")
    assert dead.exit_code == 0, dead.output
    rows = [line.split("\t") for line in dead.stdout.splitlines()]
    assert len(rows) == 2
    assert rows[0] == ["Entry", "At", "Job id", "Reason", "Code", "Job", "Store", "Message"]
    assert rows[1][2] == job["job_id"] and rows[1][3] == "max_deliveries"
    assert rows[1][7].startswith("a message with a tab and a line break that goes on that")


def test_replay_of_an_id_that_is_no_stream_id_is_a_usage_error(redis_url: str, redis_client: Any) -> None:
    """Redis refuses a malformed stream id with an error; the CLI says what ID takes (exit 2)."""
    write_dead(redis_client, inventory_job())
    for ident in ("bogus", "1-x", "1765100000000-0 x", "web01"):
        out = run(redis_url, "dead", "replay", ident, "--dry-run")
        assert out.exit_code == 2, out.output
        assert f"no dead letter {ident!r}" in out.output and "Traceback" not in out.output
