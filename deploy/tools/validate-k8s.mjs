#!/usr/bin/env node
// deploy/tools/validate-k8s.mjs FILE... - offline schema validation of
// Kubernetes manifests (e.g. `kubectl kustomize OVERLAY` output): every
// document is checked against the OpenAPI schema of its apiVersion/kind with
// kubernetes-models (core kinds), @kubernetes-models/prometheus-operator
// (ServiceMonitor) and @kubernetes-models/external-secrets (ExternalSecret).
// Catches wrong types, missing required fields and bad enum values; not
// unknown fields (the schemas allow them). A kind no package knows is an
// error, never skipped. Prints one line per document; exits 1 on any error.
import fs from "node:fs";
import path from "node:path";
import * as yaml from "js-yaml";

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = [];
  if (group === "monitoring.coreos.com") {
    candidates.push(`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`);
  } else if (group.endsWith("external-secrets.io")) {
    candidates.push(`@kubernetes-models/external-secrets/${group}/${version}/${kind}`);
  } else {
    candidates.push(`kubernetes-models/${group ? group + "/" : ""}${version}/${kind}`);
  }
  for (const c of candidates) {
    try {
      const mod = await import(c);
      if (mod[kind]) return mod[kind];
    } catch (e) {
      if (e.code !== "ERR_MODULE_NOT_FOUND" && e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") throw e;
    }
  }
  return null;
}

let errors = 0;
let docs = 0;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: validate-k8s.mjs FILE...");
  process.exit(2);
}
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  let all;
  try {
    all = yaml.loadAll(text);
  } catch (e) {
    console.log(`FAIL ${file}: YAML: ${e.message}`);
    errors++;
    continue;
  }
  for (const doc of all) {
    if (doc === null || doc === undefined) continue;
    docs++;
    const where = `${path.basename(file)}: ${doc.kind || "?"}/${(doc.metadata && doc.metadata.name) || "?"}`;
    if (!doc.apiVersion || !doc.kind) {
      console.log(`FAIL ${where}: no apiVersion or kind`);
      errors++;
      continue;
    }
    const Model = await modelFor(doc.apiVersion, doc.kind);
    if (!Model) {
      console.log(`FAIL ${where}: no schema known for ${doc.apiVersion} ${doc.kind}`);
      errors++;
      continue;
    }
    try {
      new Model(doc).validate();
      console.log(`ok   ${where} (${doc.apiVersion})`);
    } catch (e) {
      const details = (e.errors || []).map((x) => `${x.instancePath || "/"} ${x.message}`).join("; ");
      console.log(`FAIL ${where}: ${details || e.message}`);
      errors++;
    }
  }
}
console.log(`${docs} documents, ${errors} invalid`);
process.exit(errors ? 1 : 0);
