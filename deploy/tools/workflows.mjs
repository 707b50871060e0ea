#!/usr/bin/env node
// deploy/tools/workflows.mjs ROOT - parse every .github/workflows/*.yml of the
// repository at ROOT and check what can be checked without GitHub:
//   - each file is YAML with `on` and at least one job; every job has runs-on
//     (or calls a reusable workflow with `uses`) and steps (or `uses`);
//   - `needs` names jobs of the same workflow, without cycles;
//   - a local reusable workflow (`uses: ./.github/workflows/X.yml`) exists,
//     declares workflow_call, and gets every required input, nothing unknown;
//   - every repository path a `run` script names (scripts/..., deploy/...,
//     docker/..., .ci/..., t/...) exists, and every `scripts/deploy-check STEP`
//     is a step deploy-check knows (its --list, passed as DEPLOY_CHECK_STEPS);
//   - steps marked to run locally (env SLUICE_DRY_RUN_LOCAL) use no ${{ }}
//     expression in their script.
// Prints the problems, then (on stdout, one JSON object a line) the local
// steps in order: workflows in the order ci, image, scan, then the rest; jobs
// in `needs` order. Exits 1 on any problem.
import fs from "node:fs";
import path from "node:path";
import * as yaml from "js-yaml";

const root = path.resolve(process.argv[2] || ".");
const dir = path.join(root, ".github/workflows");
const knownSteps = new Set((process.env.DEPLOY_CHECK_STEPS || "").split(/\s+/).filter(Boolean));
const order = ["ci.yml", "image.yml", "scan.yml"];
const files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
files.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || a.localeCompare(b));

const problems = [];
const local = [];
let jobsSeen = 0;
let stepsSeen = 0;
const parsedFiles = {};

for (const f of files) {
  try {
    parsedFiles[f] = yaml.load(fs.readFileSync(path.join(dir, f), "utf8"));
  } catch (e) {
    problems.push(`${f}: not YAML: ${e.message.split("\n")[0]}`);
  }
}

function topo(jobs, f) {
  const done = [];
  const state = {};
  const visit = (id, trail) => {
    if (state[id] === 2) return;
    if (state[id] === 1) {
      problems.push(`${f}: jobs: cycle in needs: ${[...trail, id].join(" -> ")}`);
      return;
    }
    state[id] = 1;
    for (const n of [].concat(jobs[id].needs || [])) {
      if (!(n in jobs)) problems.push(`${f}: job ${id}: needs unknown job "${n}"`);
      else visit(n, [...trail, id]);
    }
    state[id] = 2;
    done.push(id);
  };
  for (const id of Object.keys(jobs)) visit(id, []);
  return done;
}

const pathRe = /(?:^|[\s"'=(])((?:scripts|deploy|docker|\.ci|t)\/[A-Za-z0-9_.\/-]*[A-Za-z0-9_-])/g;
for (const f of files) {
  const wf = parsedFiles[f];
  if (!wf) continue;
  const on = wf.on ?? wf[true]; // YAML 1.1 reads a bare `on` key as true
  if (!on) problems.push(`${f}: no "on" (triggers)`);
  const jobs = wf.jobs || {};
  if (!Object.keys(jobs).length) problems.push(`${f}: no jobs`);
  for (const id of topo(jobs, f)) {
    const job = jobs[id];
    jobsSeen++;
    const where = `${f}: job ${id}`;
    if (job.uses) {
      if (job.uses.startsWith("./")) {
        const target = path.join(root, job.uses);
        const callee = parsedFiles[path.basename(job.uses)];
        if (!fs.existsSync(target) || !callee) {
          problems.push(`${where}: uses ${job.uses}, which does not exist`);
        } else {
          const call = ((callee.on ?? callee[true]) || {}).workflow_call;
          if (!call) problems.push(`${where}: ${job.uses} has no workflow_call trigger`);
          const inputs = (call && call.inputs) || {};
          for (const [name, spec] of Object.entries(inputs)) {
            if (spec.required && !(job.with && name in job.with)) problems.push(`${where}: does not pass required input "${name}" to ${job.uses}`);
          }
          for (const name of Object.keys(job.with || {})) if (!(name in inputs)) problems.push(`${where}: passes "${name}", which ${job.uses} does not declare`);
        }
      }
      continue;
    }
    if (!job["runs-on"]) problems.push(`${where}: no runs-on`);
    if (!Array.isArray(job.steps) || !job.steps.length) problems.push(`${where}: no steps`);
    for (const [i, step] of (job.steps || []).entries()) {
      stepsSeen++;
      const sw = `${where} step ${i + 1} (${step.name || step.uses || "unnamed"})`;
      if (!step.run && !step.uses) problems.push(`${sw}: neither run nor uses`);
      if (step.uses && step.uses.startsWith("./") && !fs.existsSync(path.join(root, step.uses))) problems.push(`${sw}: uses ${step.uses}, which does not exist`);
      if (!step.run) continue;
      for (const m of step.run.matchAll(pathRe)) {
        if (!fs.existsSync(path.join(root, m[1]))) problems.push(`${sw}: names ${m[1]}, which is not in the repository`);
      }
      for (const m of step.run.matchAll(/scripts\/deploy-check((?:[ \t]+[a-z0-9-]+)+)/g)) {
        for (const s of m[1].trim().split(/\s+/)) {
          if (knownSteps.size && !knownSteps.has(s)) problems.push(`${sw}: deploy-check has no step "${s}"`);
        }
      }
      const isLocal = step.env && step.env.SLUICE_DRY_RUN_LOCAL;
      if (isLocal) {
        if (step.run.includes("${{")) problems.push(`${sw}: runs locally but uses a \${{ }} expression`);
        const env = Object.fromEntries(Object.entries(step.env).filter(([k]) => k !== "SLUICE_DRY_RUN_LOCAL"));
        local.push({ workflow: f, job: id, step: step.name || `step ${i + 1}`, run: step.run, env });
      }
    }
  }
}
for (const p of problems) console.error(`FAIL ${p}`);
console.error(`workflows: ${files.length} files, ${jobsSeen} jobs, ${stepsSeen} steps, ${local.length} local steps, ${problems.length} problem(s)`);
for (const l of local) console.log(JSON.stringify(l));
process.exit(problems.length ? 1 : 0);
