// `node --import <this file> file.ts`: runs raftlock's TypeScript sources (see ts-hooks.js), with stack
// traces mapped back to the .ts lines.
import { register } from 'node:module';

process.setSourceMapsEnabled(true);
register('./ts-hooks.js', import.meta.url);
