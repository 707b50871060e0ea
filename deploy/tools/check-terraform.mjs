#!/usr/bin/env node
// deploy/tools/check-terraform.mjs [TERRAFORM_DIR] - offline checks of
// deploy/terraform (terraform itself cannot init providers here):
//   - every .tf file parses (@cdktf/hcl2json; a syntax error fails with its file);
//   - every variable of every module has a description and a type, and every
//     output a description;
//   - every module block with a local source sets each variable of that module
//     that has no default, and nothing the module does not declare;
//   - every environment sets in terraform.tfvars each of its variables that
//     has no default (except `image`, which the pipeline passes with -var),
//     and nothing it does not declare;
//   - every environment has an S3 backend with bucket, key, region,
//     dynamodb_table (locking) and encrypt = true, and a key of its own.
// Prints one line per problem and a summary; exits 1 on any problem.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const hcl = require("@cdktf/hcl2json");

const root = path.resolve(process.argv[2] || path.join(path.dirname(new URL(import.meta.url).pathname), "../terraform"));
const PASSED_BY_PIPELINE = new Set(["image"]);
const problems = [];
const problem = (where, what) => problems.push(`${path.relative(process.cwd(), where)}: ${what}`);

function dirsWithTf(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && !e.name.startsWith(".")) out.push(...dirsWithTf(p));
  }
  if (fs.readdirSync(dir).some((f) => f.endsWith(".tf"))) out.push(dir);
  return out;
}

// merged view of one directory: { variable: {name: {...}}, module: {...}, output, terraform: [...] }
async function load(dir) {
  const merged = { variable: {}, module: {}, output: {}, terraform: [] };
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith(".tf")).sort()) {
    const file = path.join(dir, f);
    let j;
    try {
      j = await hcl.parse(file, fs.readFileSync(file, "utf8"));
    } catch (e) {
      problem(file, `does not parse: ${String(e.message || e).split("\n")[0]}`);
      continue;
    }
    for (const [name, blocks] of Object.entries(j.variable || {})) merged.variable[name] = { ...blocks[0], file };
    for (const [name, blocks] of Object.entries(j.module || {})) merged.module[name] = { ...blocks[0], file };
    for (const [name, blocks] of Object.entries(j.output || {})) merged.output[name] = { ...blocks[0], file };
    merged.terraform.push(...(j.terraform || []).map((t) => ({ ...t, file })));
  }
  return merged;
}

async function loadTfvars(file) {
  try {
    return await hcl.parse(file, fs.readFileSync(file, "utf8"));
  } catch (e) {
    problem(file, `does not parse: ${String(e.message || e).split("\n")[0]}`);
    return null;
  }
}

const dirs = dirsWithTf(root);
const parsed = {};
for (const d of dirs) parsed[d] = await load(d);

let variables = 0;
let calls = 0;
for (const [dir, m] of Object.entries(parsed)) {
  for (const [name, v] of Object.entries(m.variable)) {
    variables++;
    if (!v.description || !String(v.description).trim()) problem(v.file, `variable "${name}" has no description`);
    if (!v.type) problem(v.file, `variable "${name}" has no type`);
  }
  for (const [name, o] of Object.entries(m.output)) {
    if (!o.description || !String(o.description).trim()) problem(o.file, `output "${name}" has no description`);
  }
  for (const [name, call] of Object.entries(m.module)) {
    if (typeof call.source !== "string" || !call.source.startsWith(".")) continue;
    calls++;
    const target = path.resolve(dir, call.source);
    const callee = parsed[target];
    if (!callee) {
      problem(call.file, `module "${name}": source ${call.source} has no .tf files`);
      continue;
    }
    const meta = new Set(["source", "version", "providers", "count", "for_each", "depends_on", "file"]);
    for (const [vname, v] of Object.entries(callee.variable)) {
      if (!("default" in v) && !(vname in call)) problem(call.file, `module "${name}" does not set ${call.source} variable "${vname}" (no default)`);
    }
    for (const key of Object.keys(call)) {
      if (!meta.has(key) && !(key in callee.variable)) problem(call.file, `module "${name}" sets "${key}", which ${call.source} does not declare`);
    }
  }
}

const envRoot = path.join(root, "environments");
const envs = fs.existsSync(envRoot) ? fs.readdirSync(envRoot).filter((e) => fs.statSync(path.join(envRoot, e)).isDirectory()) : [];
const stateKeys = new Map();
for (const env of envs) {
  const dir = path.join(envRoot, env);
  const m = parsed[dir];
  if (!m) {
    problem(dir, "no .tf files");
    continue;
  }
  const tfvarsFile = path.join(dir, "terraform.tfvars");
  const tfvars = fs.existsSync(tfvarsFile) ? await loadTfvars(tfvarsFile) : null;
  if (!fs.existsSync(tfvarsFile)) problem(dir, "no terraform.tfvars");
  if (tfvars) {
    for (const [vname, v] of Object.entries(m.variable)) {
      if (!("default" in v) && !PASSED_BY_PIPELINE.has(vname) && !(vname in tfvars)) problem(tfvarsFile, `does not set "${vname}" (no default)`);
    }
    for (const key of Object.keys(tfvars)) if (!(key in m.variable)) problem(tfvarsFile, `sets "${key}", which the environment does not declare`);
  }
  const backends = m.terraform.flatMap((t) => Object.entries(t.backend || {}).map(([kind, b]) => ({ kind, cfg: b[0], file: t.file })));
  if (backends.length !== 1 || backends[0].kind !== "s3") {
    problem(dir, `needs exactly one backend "s3" (found: ${backends.map((b) => b.kind).join(", ") || "none"})`);
    continue;
  }
  const b = backends[0].cfg;
  for (const k of ["bucket", "key", "region", "dynamodb_table"]) if (!b[k]) problem(backends[0].file, `backend "s3" has no ${k}`);
  if (b.encrypt !== true) problem(backends[0].file, 'backend "s3" must set encrypt = true');
  if (b.key) {
    if (stateKeys.has(b.key)) problem(backends[0].file, `state key ${b.key} is also used by ${stateKeys.get(b.key)}`);
    stateKeys.set(b.key, env);
  }
}

for (const p of problems) console.log(`FAIL ${p}`);
console.log(`terraform: ${dirs.length} directories, ${variables} variables, ${calls} module calls, ${envs.length} environments (${envs.join(", ")}), ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
