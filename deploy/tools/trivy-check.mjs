#!/usr/bin/env node
// deploy/tools/trivy-check.mjs TRIVY.json [EXPLAINED.json] - read the JSON of
// `trivy config --format json`, print every misconfiguration on one line, and
// exit 1 if any is not explained in EXPLAINED.json (default: trivy-explained.json
// next to this script). Explained findings are printed with their reason, so
// the log says why each one remains.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [, , report, explainedPath] = process.argv;
if (!report) {
  console.error("usage: trivy-check.mjs TRIVY.json [EXPLAINED.json]");
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const explained = JSON.parse(fs.readFileSync(explainedPath || path.join(here, "trivy-explained.json"), "utf8")).explained;
const data = JSON.parse(fs.readFileSync(report, "utf8"));
let open = 0;
let known = 0;
let scanned = 0;
for (const r of data.Results || []) {
  scanned++;
  for (const m of r.Misconfigurations || []) {
    if (m.Status && m.Status !== "FAIL") continue;
    const text = `${r.Target} ${m.ID === "N/A" ? m.AVDID : m.ID} ${m.Severity}: ${m.Message}`;
    const why = explained.find(
      (e) => (e.id === m.ID || e.id === m.AVDID) && (!e.target || r.Target.includes(e.target)) && (!e.message || (m.Message || "").includes(e.message)),
    );
    if (why) {
      known++;
      console.log(`explained ${text}\n          -> ${why.reason}`);
    } else {
      open++;
      console.log(`FAIL      ${text}\n          (${m.Title}; ${m.PrimaryURL || ""})`);
    }
  }
}
console.log(`trivy: ${scanned} files, ${open} open finding(s), ${known} explained`);
process.exit(open ? 1 : 0);
