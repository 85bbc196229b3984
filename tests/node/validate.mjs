// Validate documents against a JSON Schema with Ajv (draft 2020-12) in strict mode.
// Usage: node validate.mjs SCHEMA.json DOCUMENTS.json
//   DOCUMENTS.json: [{"name": "...", "document": {...}}, ...]
// Prints one JSON object: {"verdicts": {"name": true|false, ...}, "errors": {"name": [...]}}.
// Compiling fails (exit 2) on anything Ajv's strict mode reports, warnings included.
import { readFileSync } from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";

const [schemaPath, documentsPath] = process.argv.slice(2);
const warnings = [];
const logger = { log: () => {}, warn: (...a) => warnings.push(a.join(" ")), error: (...a) => warnings.push(a.join(" ")) };
const ajv = new Ajv2020({ strict: true, allErrors: false, logger });
let validate;
try {
  validate = ajv.compile(JSON.parse(readFileSync(schemaPath, "utf8")));
} catch (err) {
  console.error(`schema does not compile in strict mode: ${err.message}`);
  process.exit(2);
}
if (warnings.length) {
  console.error(`strict mode warnings: ${warnings.join("; ")}`);
  process.exit(2);
}
const verdicts = {};
const errors = {};
for (const { name, document } of JSON.parse(readFileSync(documentsPath, "utf8"))) {
  verdicts[name] = validate(document);
  if (!verdicts[name]) errors[name] = validate.errors.slice(0, 3).map((e) => `${e.instancePath} ${e.message}`);
}
process.stdout.write(JSON.stringify({ verdicts, errors }) + "\n");
