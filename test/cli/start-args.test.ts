// `raftlock start`'s parser: the disk-writes choice (docs/operations.md), in both modes.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseStartArgs } from '../../src/cli/start.ts';
import { InvalidArgumentError } from '../../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'raftlock-start-args-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const flags = [
  '--id',
  'n1',
  '--listen',
  '127.0.0.1:7001',
  '--peer-listen',
  '127.0.0.1:7101',
  '--data-dir',
  join(dir, 'n1'),
  '--cluster-secret',
  'a-secret-of-enough-length-0123456789',
];

describe('raftlock start --disk-writes', () => {
  it('defaults to inline and takes pool, in flags mode and with --config', () => {
    expect(parseStartArgs(flags)?.config.diskWrites).toBe('inline');
    expect(parseStartArgs([...flags, '--disk-writes', 'pool'])?.config.diskWrites).toBe('pool');
    const file = join(dir, 'cluster.json');
    writeFileSync(
      file,
      JSON.stringify({
        clusterSecret: 'a-secret-of-enough-length-0123456789',
        nodes: [{ id: 'n1', url: 'ws://127.0.0.1:7001', peerUrl: 'ws://127.0.0.1:7101', dataDir: 'n1' }],
      }),
    );
    expect(parseStartArgs(['--config', file, '--node', 'n1'])?.config.diskWrites).toBe('inline');
    expect(
      parseStartArgs(['--config', file, '--node', 'n1', '--disk-writes', 'pool'])?.config.diskWrites,
    ).toBe('pool');
  });

  it('refuses any other value with a typed error', () => {
    for (const value of ['sync', 'INLINE', '']) {
      expect(() => parseStartArgs([...flags, '--disk-writes', value])).toThrow(InvalidArgumentError);
    }
  });
});
