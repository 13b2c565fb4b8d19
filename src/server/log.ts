// Structured logs through pino: one line per event, `event` naming what happened in snake_case.
// `json` writes pino's JSON lines as they are; `text` turns each into `time level event key=value…`
// for a terminal, from the same records.

import { type Logger, pino } from 'pino';

export type LogFormat = 'json' | 'text';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

export type { Logger };

const levelNames: Readonly<Record<number, string>> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

function textLine(json: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, event, msg, pid: _pid, hostname: _hostname, ...rest } = record;
  const parts = [
    new Date(typeof time === 'number' ? time : Date.now()).toISOString(),
    (levelNames[level as number] ?? String(level)).padEnd(5),
    String(event ?? msg ?? ''),
  ];
  for (const [key, value] of Object.entries(rest)) {
    parts.push(`${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
  }
  if (msg !== undefined && event !== undefined) parts.push(`msg=${JSON.stringify(msg)}`);
  return `${parts.join(' ')}\n`;
}

export function createLogger(options: {
  readonly format: LogFormat;
  readonly level?: LogLevel;
  readonly base?: Record<string, unknown>;
}): Logger {
  const base = { ...options.base };
  const level = options.level ?? 'info';
  if (options.format === 'json') return pino({ level, base }, pino.destination({ sync: true }));
  const stream = {
    write(line: string): void {
      process.stdout.write(textLine(line));
    },
  };
  return pino({ level, base }, stream);
}

/** A logger that drops everything (embedding, tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
