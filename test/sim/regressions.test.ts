// Schedules that once broke a check, replayed exactly on every run. Each file in test/sim/regressions/
// is a saved (usually fast-check-shrunk) schedule; test/sim/regressions/README.md says what each caught.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSchedule, type Schedule } from './schedule.ts';

const dir = join(import.meta.dirname, 'regressions');
const files = readdirSync(dir).filter((name) => name.endsWith('.json'));

describe('simulator regressions', () => {
  it('the regression folder holds schedules', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  for (const file of files) {
    it(`C1–C5: ${file} holds every safety and liveness check`, () => {
      const schedule = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Schedule;
      const report = runSchedule(schedule);
      expect(report.ticks).toBeGreaterThanOrEqual(schedule.ticks);
    });
  }
});
