// WinCert Orchestrator producer helpers for Node.js (docs/producers.md), built-in crypto only.
//   sealSecret(key, text)        Fernet token of a UTF-8 secret (what the worker decrypts)
//   jobAuth(key, task, id, eta, body)   the wincert_auth header value
//   celeryEnvelope(job, opts)    the Celery protocol-2 message kombu's Redis transport stores
//   waitForResult(redis, id, ms) the job's JobResult from its kept key (JSON or gzip+base64)
//   streamEntryResult(redis, f)  the JobResult of a wincert:results entry (inline or by reference)
import crypto from "node:crypto";
import zlib from "node:zlib";

export const TASK_NAME = "wincert.run_job";
export const DEFAULT_QUEUE = "wincert";
export const RESULTS_STREAM = "wincert:results";

/** The first key of WINCERT_SECRET_KEYS ("k1,k2,..."): producers seal and sign with it. */
export function firstKey(secretKeys) {
  const key = (secretKeys || "").split(",").map((k) => k.trim()).find((k) => k);
  if (!key) throw new Error("WINCERT_SECRET_KEYS is empty; make a key with `wincert keygen`");
  const raw = Buffer.from(key, "base64url");
  if (raw.length !== 32) throw new Error("WINCERT_SECRET_KEYS: the first key is not 32 bytes of urlsafe base64");
  return key;
}

/**
 * Fernet (https://github.com/fernet/spec): 0x80 | big-endian seconds | IV | AES-128-CBC(PKCS#7) |
 * HMAC-SHA256 over all of that; urlsafe base64 WITH padding (Python's decoder requires it).
 */
export function sealSecret(key, plaintext, { now = Date.now(), iv = crypto.randomBytes(16) } = {}) {
  const raw = Buffer.from(key, "base64url");
  const signingKey = raw.subarray(0, 16);
  const encryptionKey = raw.subarray(16, 32);
  const cipher = crypto.createCipheriv("aes-128-cbc", encryptionKey, iv);
  const ciphertext = Buffer.concat([cipher.update(Buffer.from(plaintext, "utf8")), cipher.final()]);
  const time = Buffer.alloc(8);
  time.writeBigUInt64BE(BigInt(Math.floor(now / 1000)));
  const signed = Buffer.concat([Buffer.from([0x80]), time, iv, ciphertext]);
  const mac = crypto.createHmac("sha256", signingKey).update(signed).digest();
  return Buffer.concat([signed, mac]).toString("base64").replaceAll("+", "-").replaceAll("/", "_");
}

/** "v1:" + hex HMAC-SHA256 over "wincert-job-v1\n" task \n id \n eta \n body (docs/producers.md). */
export function jobAuth(key, task, id, eta, body) {
  const ikm = Buffer.from(key, "base64url");
  const macKey = Buffer.from(crypto.hkdfSync("sha256", ikm, Buffer.alloc(0), "wincert job authentication v1", 32));
  const head = Buffer.from(`wincert-job-v1\n${task}\n${id}\n${eta ?? ""}\n`, "utf8");
  return "v1:" + crypto.createHmac("sha256", macKey).update(head).update(body).digest("hex");
}

/** The JSON text to LPUSH onto the queue list: a Celery protocol-2 message for one job. */
export function celeryEnvelope(job, { key, queue = DEFAULT_QUEUE, origin = "node-producer" }) {
  const id = job.job_id;
  const body = Buffer.from(
    JSON.stringify([[job], {}, { callbacks: null, errbacks: null, chain: null, chord: null }]),
    "utf8",
  );
  const headers = {
    lang: "js",
    task: TASK_NAME,
    id,
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: 0,
    timelimit: [null, null],
    root_id: id,
    parent_id: null,
    argsrepr: `[<${job.job_type} job ${id}>]`, // shown in logs: never put secrets here
    kwargsrepr: "{}",
    origin,
    ignore_result: false,
    wincert_auth: jobAuth(key, TASK_NAME, id, null, body), // sign the exact bytes sent
  };
  return JSON.stringify({
    body: body.toString("base64"),
    "content-encoding": "utf-8",
    "content-type": "application/json",
    headers,
    properties: {
      correlation_id: id,
      reply_to: null,
      delivery_mode: 2,
      delivery_info: { exchange: "", routing_key: queue },
      priority: 0,
      body_encoding: "base64",
      delivery_tag: crypto.randomUUID(),
    },
  });
}

/** Where the worker keeps a job's result (one copy, WINCERT_RESULT_EXPIRES: 24 h by default). */
export function resultKey(jobId) {
  return `wincert:job:${jobId}:result`;
}

/**
 * The JobResult in a kept value: JSON text ("{..."), or, for a result larger than the worker's
 * WINCERT_RESULT_INLINE_BYTES, its gzip in standard base64 ("H4sI..."). Inflation is bounded:
 * anything read from Redis is untrusted.
 */
export function decodeKeptResult(value) {
  if (value.startsWith("H4sI")) {
    const gzip = Buffer.from(value, "base64");
    // the reader's bound (producer/result_store.py inflation_cap): 64x the gzip bytes, at least
    // 1 MiB, at most 64 MiB; gunzipSync throws past it and on truncated gzip
    const cap = Math.min(64 * 1024 * 1024, Math.max(1024 * 1024, 64 * gzip.length));
    const json = zlib.gunzipSync(gzip, { maxOutputLength: cap });
    return JSON.parse(json.toString("utf8"));
  }
  return JSON.parse(value);
}

/** The job's result (a JobResult, schema/result.schema.json): the kept key, polled. */
export async function waitForResult(redis, jobId, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const stored = await redis.get(resultKey(jobId));
    if (stored !== null) return decodeKeptResult(stored);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`no result for job ${jobId} after ${timeoutMs / 1000} s; it may still be queued or running`);
}

/**
 * The JobResult of one wincert:results entry (node-redis: `message` of an xRange/xRead entry):
 * inline in field `result`, or, for a large result, a reference (`result_key`, `encoding`
 * gzip+base64, `bytes`, `items`) to the kept copy; null when that copy expired. Every entry also
 * carries `job_id`, `status` and `code`.
 */
export async function streamEntryResult(redis, fields) {
  if (fields.result !== undefined) return JSON.parse(fields.result);
  if (fields.result_key === undefined || fields.result_key !== resultKey(fields.job_id)) return null;
  const stored = await redis.get(fields.result_key);
  return stored === null ? null : decodeKeptResult(stored);
}
