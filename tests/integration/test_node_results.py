"""A non-Python consumer (examples/node/wincert.mjs) reads both forms of a published result.

The worker's own publisher (``worker.results.publish_result``) writes a small result (inline in
its stream entry, kept as JSON) and a large one (a reference in the entry, kept gzip+base64);
Node's ``waitForResult`` and ``streamEntryResult`` must return the same JobResults.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import redis

from producer.messages import JobResult
from producer.result_store import result_key
from tests.e2e.test_node_producer_e2e import EXAMPLE, node
from tests.integration.test_client import inventory_job, result_for
from worker.results import publish_result

SCRIPT = """
import { createClient } from "redis";
import { RESULTS_STREAM, streamEntryResult, waitForResult } from "./wincert.mjs";
const [url, small, large] = process.argv.slice(1);
const redis = createClient({ url });
await redis.connect();
const waited = [await waitForResult(redis, small, 5000), await waitForResult(redis, large, 5000)];
const entries = await redis.xRange(RESULTS_STREAM, "-", "+");
const streamed = [];
for (const entry of entries) {
  streamed.push({ fields: entry.message, result: await streamEntryResult(redis, entry.message) });
}
await redis.quit();
process.stdout.write(JSON.stringify({ waited, streamed }));
"""


def test_node_reads_inline_and_referenced_results(redis_url: str, redis_client: redis.Redis) -> None:
    small = result_for(inventory_job().model_dump(mode="json"))
    large = result_for(inventory_job().model_dump(mode="json"), message="large " + "x" * 20_000)
    for result in (small, large):
        publish_result(redis_client, result, 1000, keep_as=result_key(result.job_id), expires=60)
    assert redis_client.get(result_key(large.job_id)).startswith("H4sI")  # default bound: 16 KiB
    done = subprocess.run(
        [node(), "--input-type=module", "-e", SCRIPT, "--", redis_url, str(small.job_id), str(large.job_id)],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    assert [JobResult.model_validate(r) for r in out["waited"]] == [small, large]
    inline, reference = out["streamed"]
    assert "result" in inline["fields"] and "result" not in reference["fields"]
    assert reference["fields"]["encoding"] == "gzip+base64"
    assert [JobResult.model_validate(e["result"]) for e in out["streamed"]] == [small, large]
