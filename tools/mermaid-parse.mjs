#!/usr/bin/env node
// Parse every ```mermaid block of the Markdown files given with mermaid's own parser (in jsdom,
// no browser). Prints one line per block; exits 1 if any block does not parse.
// Used by tests/unit/test_docs.py; `node tools/mermaid-parse.mjs README.md docs/*.md`.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

let failed = 0;
let blocks = 0;
for (const file of process.argv.slice(2)) {
  const lines = readFileSync(file, "utf8").split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "```mermaid") continue;
    const start = i + 1;
    const body = [];
    for (i = start; i < lines.length && lines[i].trim() !== "```"; i++) body.push(lines[i]);
    blocks += 1;
    try {
      const result = await mermaid.parse(body.join("\n"));
      console.log(`${file}:${start}: ok ${result.diagramType}`);
    } catch (error) {
      failed += 1;
      console.log(`${file}:${start}: ${String(error.message || error).split("\n").join(" | ")}`);
    }
  }
}
console.log(`${blocks} block(s), ${failed} failed`);
process.exit(failed ? 1 : 0);
