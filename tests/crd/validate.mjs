// Validates the Prometheus Operator's kinds among the documents on stdin (a JSON array: the
// built kustomize output) against the CRDs' OpenAPI schemas that
// @kubernetes-models/prometheus-operator compiles (types, enums, patterns, required fields).
// Usage: node validate.mjs <dir holding node_modules> < docs.json
// Prints `ok <Kind>/<name>` per document checked; a monitoring.coreos.com kind it has no schema
// for is an error, never skipped. The other kinds are kubernetes-validate's.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node validate.mjs <dir holding node_modules> < docs.json");
  process.exit(2);
}
const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const doc of docs) {
  const [group, version] = (doc.apiVersion ?? "").split("/");
  if (group !== "monitoring.coreos.com") continue;
  const what = `${doc.kind}/${doc.metadata?.name}`;
  const file = `${dir}/node_modules/@kubernetes-models/prometheus-operator/${group}/${version}/${doc.kind}.js`;
  let Model;
  try {
    Model = (await import(pathToFileURL(file).href))[doc.kind];
  } catch (e) {
    console.error(`${what}: no schema for ${doc.apiVersion} ${doc.kind} (${e.message})`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok ${what}`);
  } catch (e) {
    console.error(`${what}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
