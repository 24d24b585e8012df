#!/usr/bin/env node
// Parse every ```mermaid block of the markdown files named on the command line
// with mermaid's own parser (the one GitHub's renderer runs), so a chart that
// would show as "Unable to render rich display" fails a test instead.
// Usage: node check.mjs FILE.md...   exit 0: all blocks parse; 1: a block does
// not (one line per failure); 2: bad usage or no block found at all.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

// mermaid sanitizes labels with DOMPurify, which needs a window.
const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node check.mjs FILE.md...");
  process.exit(2);
}
const fence = /^```mermaid[ \t]*\r?\n([\s\S]*?)^```[ \t]*$/gm;
let blocks = 0;
let failures = 0;
for (const file of files) {
  const text = readFileSync(file, "utf8");
  for (const match of text.matchAll(fence)) {
    blocks += 1;
    const line = text.slice(0, match.index).split("\n").length;
    try {
      const result = await mermaid.parse(match[1]);
      console.log(`${file}:${line}: ok (${result.diagramType})`);
    } catch (error) {
      failures += 1;
      const message = String(error?.message ?? error).split("\n").join(" | ");
      console.log(`${file}:${line}: ${message}`);
    }
  }
}
if (blocks === 0) {
  console.error("no ```mermaid block found");
  process.exit(2);
}
process.exit(failures ? 1 : 0);
