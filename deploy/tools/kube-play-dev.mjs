#!/usr/bin/env node
// deploy/tools/kube-play-dev.mjs RENDERED.yaml OUT.yaml KEY=VALUE... - turn
// the rendered dev overlay (`kubectl kustomize deploy/k8s/overlays/dev`) into
// what `podman kube play` runs here: the ConfigMaps and the sluice Deployment,
// unchanged except that the pod uses the host network and sluice-env gets
// the KEY=VALUE overrides (loopback listen address and the upstream and Redis
// addresses of processes the caller started, since there is no cluster DNS;
// without port mappings, which podman refuses with the host network).
// Secret volumes become hostPath volumes of the same files under SECRETS_DIR
// (env KUBE_PLAY_SECRETS_DIR): podman 4.3's kube play crashes on secret
// volumes (nil pointer in VolumeFromSecret), so the script writes each key of
// the Secret to SECRETS_DIR/VOLUME/PATH and mounts that. Kinds podman cannot
// play (Service, HPA, PDB, NetworkPolicy, StatefulSet, ServiceMonitor, ...)
// are left out.
import fs from "node:fs";
import path from "node:path";
import * as yaml from "js-yaml";

const [, , input, output, ...pairs] = process.argv;
if (!input || !output) {
  console.error("usage: kube-play-dev.mjs RENDERED.yaml OUT.yaml KEY=VALUE...");
  process.exit(2);
}
const overrides = Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]));
const docs = yaml.loadAll(fs.readFileSync(input, "utf8")).filter(Boolean);
const out = [];
const secretsDir = process.env.KUBE_PLAY_SECRETS_DIR;
if (!secretsDir) {
  console.error("kube-play-dev: set KUBE_PLAY_SECRETS_DIR (where the Secrets' files are written)");
  process.exit(2);
}
const secrets = Object.fromEntries(docs.filter((d) => d.kind === "Secret").map((d) => [d.metadata.name, d]));
const played = [];
for (const d of docs) {
  if (d.kind === "ConfigMap") {
    if (d.metadata.name.startsWith("sluice-env")) Object.assign(d.data, overrides);
    out.push(d);
  } else if (d.kind === "Deployment" && d.metadata.name === "sluice") {
    d.spec.template.spec.hostNetwork = true;
    // with the host network podman refuses port mappings: drop the
    // containerPorts and point the probes at the overridden ports
    const listenPort = Number((overrides.SLUICE_HTTP_LISTEN || ":8080").split(":").pop());
    const adminPort = Number((overrides.SLUICE_ADMIN_HTTP || ":9901").split(":").pop());
    for (const c of d.spec.template.spec.containers) {
      delete c.ports;
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        const action = probe && (probe.httpGet || probe.tcpSocket);
        if (action) action.port = action.port === "admin-http" || action.port === 9901 ? adminPort : listenPort;
      }
    }
    for (const v of d.spec.template.spec.volumes || []) {
      if (!v.secret) continue;
      const s = secrets[v.secret.secretName];
      if (!s) {
        console.error(`kube-play-dev: volume ${v.name}: no Secret ${v.secret.secretName} in ${input}`);
        process.exit(1);
      }
      const dir = path.join(secretsDir, v.name);
      fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
      for (const item of v.secret.items || Object.keys(s.data).map((k) => ({ key: k, path: k }))) {
        fs.writeFileSync(path.join(dir, item.path), Buffer.from(s.data[item.key], "base64"), { mode: 0o440 });
      }
      played.push(s.metadata.name);
      v.hostPath = { path: dir, type: "Directory" };
      delete v.secret;
    }
    out.push(d);
  }
}
if (!out.some((d) => d.kind === "Deployment") || !played.some((n) => n.startsWith("sluice-redis"))) {
  console.error("kube-play-dev: no sluice Deployment or sluice-redis Secret in " + input);
  process.exit(1);
}
fs.writeFileSync(output, out.map((d) => yaml.dump(d)).join("---\n"));
console.log(`${output}: ${out.length} documents; Secrets ${played.join(", ")} as files in ${secretsDir}`);
