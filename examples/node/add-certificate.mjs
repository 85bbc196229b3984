#!/usr/bin/env node
// Enqueue a Management Add job with a sealed PFX and wait for its result.
//
//   WINCERT_BROKER_URL=redis://127.0.0.1:6379/0 WINCERT_SECRET_KEYS=... \
//   node add-certificate.mjs --host web01.contoso.com --store-path My --credential web-admins \
//        --pfx web01.pfx --pfx-password-file pw.txt [--protocol http] [--port 5985] [--store-type WinCert]
//
// Prints the JobResult JSON on stdout; exit 0 success, 3 warning, 4 failure, 1 error.
import { readFileSync } from "node:fs";
import crypto from "node:crypto";
import { parseArgs } from "node:util";
import { createClient } from "redis";
import { DEFAULT_QUEUE, celeryEnvelope, firstKey, sealSecret, waitForResult } from "./wincert.mjs";

const USAGE =
  "usage: add-certificate.mjs --host HOST --pfx FILE [--pfx-password-file FILE] [--credential NAME]\n" +
  "       [--store-path My] [--store-type WinCert] [--protocol https|http] [--port N] [--timeout SECONDS]\n" +
  "env: WINCERT_BROKER_URL, WINCERT_SECRET_KEYS, WINCERT_QUEUE; exit 0 success, 3 warning, 4 failure,\n" +
  "     2 usage, 1 error (no result within --timeout included)";
let values;
try {
  ({ values } = parseArgs({
    options: {
      help: { type: "boolean", short: "h" },
      host: { type: "string" },
      "store-path": { type: "string", default: "My" },
      "store-type": { type: "string", default: "WinCert" },
      protocol: { type: "string", default: "https" },
      port: { type: "string" },
      credential: { type: "string" },
      pfx: { type: "string" },
      "pfx-password-file": { type: "string" },
      timeout: { type: "string", default: "120" },
    },
  }));
} catch (err) {
  console.error(`${err.message}\n${USAGE}`); // an unknown option or a missing value
  process.exit(2);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
if (!values.host || !values.pfx) {
  console.error(USAGE);
  process.exit(2);
}

const key = firstKey(process.env.WINCERT_SECRET_KEYS);
const queue = process.env.WINCERT_QUEUE || DEFAULT_QUEUE;
const pfx = readFileSync(values.pfx);
const certificate = { contents_encrypted: sealSecret(key, pfx.toString("base64")) }; // the file as base64 text
if (values["pfx-password-file"] !== undefined) {
  const password = readFileSync(values["pfx-password-file"], "utf8").replace(/\r?\n$/, "");
  certificate.password_encrypted = sealSecret(key, password); // none given = "no password"
}
const job = {
  job_id: crypto.randomUUID(),
  job_type: "add",
  submitted_at: new Date().toISOString(),
  store: {
    store_type: values["store-type"],
    client_machine: values.host,
    store_path: values["store-path"],
    protocol: values.protocol,
    ...(values.port ? { port: Number(values.port) } : {}),
    ...(values.credential ? { credential: { kind: "named", name: values.credential } } : {}),
  },
  certificate,
};

const redis = createClient({ url: process.env.WINCERT_BROKER_URL || "redis://127.0.0.1:6379/0" });
redis.on("error", (err) => console.error(`redis: ${err.message}`));
await redis.connect();
try {
  await redis.lPush(queue, celeryEnvelope(job, { key, queue })); // workers BRPOP the list named after the queue
  console.error(`submitted job ${job.job_id} to queue ${queue}`);
  const result = await waitForResult(redis, job.job_id, Number(values.timeout) * 1000);
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = { success: 0, warning: 3, failure: 4 }[result.status] ?? 1;
} catch (err) {
  console.error(`error: ${err.message}`);
  process.exitCode = 1;
} finally {
  await redis.quit();
}
