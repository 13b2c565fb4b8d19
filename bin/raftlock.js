#!/usr/bin/env node
// The `raftlock` command. raftlock runs from its TypeScript sources (no build step): register tsx's
// loader in this process, then hand over to the CLI.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
