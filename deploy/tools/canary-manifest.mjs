#!/usr/bin/env node
// deploy/tools/canary-manifest.mjs - manifest edits for deploy/ci/deploy-gateway.sh:
//   set-image KUSTOMIZATION.yaml NAME IMAGE   point the overlay's `images` entry
//                                             NAME at IMAGE (REPO@sha256:... or REPO:TAG)
//   canary RENDERED.yaml                      print the canary: the rendered
//       ConfigMaps (their hashed names are new when the config changed) and a
//       Deployment "sluice-canary": the rendered Deployment "sluice" with one
//       replica and the label app.kubernetes.io/track=canary added to its
//       selector and pods (so the Service, which selects name+component,
//       includes it; the main Deployment's ReplicaSets keep their own
//       pod-template-hash and never adopt it).
import fs from "node:fs";
import * as yaml from "js-yaml";

const [, , cmd, ...args] = process.argv;
function fail(msg) {
  console.error(`canary-manifest: ${msg}`);
  process.exit(1);
}

if (cmd === "set-image") {
  const [file, name, image] = args;
  if (!file || !name || !image) fail("usage: set-image KUSTOMIZATION.yaml NAME IMAGE");
  const k = yaml.load(fs.readFileSync(file, "utf8"));
  k.images = k.images || [];
  let entry = k.images.find((i) => i.name === name);
  if (!entry) k.images.push((entry = { name }));
  delete entry.newTag;
  delete entry.digest;
  const at = image.indexOf("@");
  if (at >= 0) {
    entry.newName = image.slice(0, at);
    entry.digest = image.slice(at + 1);
  } else {
    const colon = image.lastIndexOf(":");
    if (colon > image.lastIndexOf("/")) {
      entry.newName = image.slice(0, colon);
      entry.newTag = image.slice(colon + 1);
    } else {
      entry.newName = image;
    }
  }
  fs.writeFileSync(file, yaml.dump(k));
} else if (cmd === "canary") {
  const [file] = args;
  if (!file) fail("usage: canary RENDERED.yaml");
  const docs = yaml.loadAll(fs.readFileSync(file, "utf8")).filter(Boolean);
  const out = docs.filter((d) => d.kind === "ConfigMap");
  const main = docs.find((d) => d.kind === "Deployment" && d.metadata.name === "sluice");
  if (!main) fail(`no Deployment sluice in ${file}`);
  const c = structuredClone(main);
  c.metadata.name = "sluice-canary";
  c.metadata.labels = { ...(c.metadata.labels || {}), "app.kubernetes.io/track": "canary" };
  c.spec.replicas = 1;
  c.spec.selector.matchLabels["app.kubernetes.io/track"] = "canary";
  c.spec.template.metadata.labels["app.kubernetes.io/track"] = "canary";
  out.push(c);
  process.stdout.write(out.map((d) => yaml.dump(d)).join("---\n"));
} else {
  fail("usage: canary-manifest.mjs set-image|canary ...");
}
