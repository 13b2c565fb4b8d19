#!/usr/bin/env node
// The `raftlock` command. raftlock runs from its TypeScript sources (no build step): register the loader
// that strips their types (ts-loader.js), then hand over to the CLI.
import './ts-loader.js';

await import('../src/cli/main.ts');
