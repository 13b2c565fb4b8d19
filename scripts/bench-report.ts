// Output of `npm run bench`: the progress bar, the summary table, and the SVG chart.

export class ProgressBar {
  private readonly total: number;
  private done = 0;
  private label = '';
  private fraction = 0;
  private note = '';
  private readonly tty: boolean;
  private lastPlainMs = 0;
  private readonly startMs = Date.now();

  constructor(totalSteps: number) {
    this.total = Math.max(1, totalSteps);
    this.tty = process.stderr.isTTY === true;
  }

  step(label: string): void {
    if (this.label !== '') this.done++;
    this.label = label;
    this.fraction = 0;
    this.note = '';
    this.render(true);
  }

  update(fraction: number, note?: string): void {
    this.fraction = Math.max(0, Math.min(1, fraction));
    if (note !== undefined) this.note = note;
    this.render(false);
  }

  finish(): void {
    this.done = this.total;
    this.fraction = 0;
    this.label = 'done';
    this.note = '';
    this.render(true);
    if (this.tty) process.stderr.write('\n');
  }

  private render(force: boolean): void {
    const overall = Math.min(1, (this.done + this.fraction) / this.total);
    const width = 30;
    const filled = Math.round(overall * width);
    const elapsed = Math.round((Date.now() - this.startMs) / 1000);
    const line =
      `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.round(overall * 100)).padStart(3)}% ` +
      `${elapsed}s  ${this.label}${this.note === '' ? '' : ` — ${this.note}`}`;
    if (this.tty) {
      process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns ?? 120) - 1)}`);
      return;
    }
    // Not a terminal (CI, a pipe): a plain line per step, and every 10 s within one.
    const now = Date.now();
    if (force || now - this.lastPlainMs > 10_000) {
      this.lastPlainMs = now;
      process.stderr.write(`${line}\n`);
    }
  }
}

export interface Row {
  readonly workload: string;
  readonly measure: string;
  /** 'higher' is better (rates) or 'lower' (latencies, RSS). */
  readonly better: 'higher' | 'lower';
  readonly raftlock: number | null;
  readonly etcd: number | null;
  /** raftlock of the `--baseline` checkout, measured in the same run. */
  readonly before: number | null;
  readonly unit: string;
  readonly target: string;
  /** Whether raftlock meets the target; null when not measured. */
  readonly met: boolean | null;
}

function formatValue(value: number | null, unit: string): string {
  if (value === null || Number.isNaN(value)) return '—';
  if (!Number.isFinite(value)) return '∞';
  if (unit === 'MB') return `${value.toFixed(0)} MB`;
  if (unit === 'ms') return value >= 100 ? `${value.toFixed(0)} ms` : `${value.toFixed(2)} ms`;
  if (unit === 's') return `${value.toFixed(2)} s`;
  if (unit === '×') return `${value.toFixed(2)}`;
  return `${Math.round(value).toLocaleString('en-US')}${unit === '' ? '' : ` ${unit}`}`;
}

/** raftlock's advantage: > 1 means raftlock is ahead, whichever direction is better. */
export function ratio(row: Row): number | null {
  if (row.raftlock === null || row.etcd === null) return null;
  if (!Number.isFinite(row.raftlock) || !Number.isFinite(row.etcd)) return null;
  if (row.raftlock === 0 || row.etcd === 0) return null;
  return row.better === 'higher' ? row.raftlock / row.etcd : row.etcd / row.raftlock;
}

/** The summary as a Markdown table (also readable in a terminal). */
export function table(rows: readonly Row[], withEtcd: boolean, withBefore = false): string {
  const header = [
    'workload',
    'measure',
    ...(withBefore ? ['before'] : []),
    'raftlock',
    ...(withEtcd ? ['etcd', 'raftlock/etcd'] : []),
    'target',
    'met',
  ];
  const lines = rows.map((row) => {
    const r = ratio(row);
    const cells = [
      row.workload,
      row.measure,
      ...(withBefore ? [formatValue(row.before, row.unit)] : []),
      formatValue(row.raftlock, row.unit),
      ...(withEtcd ? [formatValue(row.etcd, row.unit), r === null ? '—' : `${r.toFixed(2)}×`] : []),
      row.target,
      row.met === null ? '—' : row.met ? 'yes' : 'no',
    ];
    return cells;
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((cells) => cells[i]!.length)));
  const format = (cells: readonly string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [format(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...lines.map(format)].join(
    '\n',
  );
}

const escapeXml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * A horizontal bar chart of raftlock's advantage over etcd per measure (log scale, 1× marked), or —
 * without etcd figures — of raftlock against its targets.
 */
export function chartSvg(rows: readonly Row[], title: string, subtitle: string): string {
  const bars = rows
    .map((row) => ({ row, r: ratio(row) }))
    .filter((bar): bar is { row: Row; r: number } => bar.r !== null);
  const width = 760;
  const left = 250;
  const right = 90;
  const barHeight = 22;
  const gap = 10;
  const subtitleLines = subtitle.split('\n');
  const top = 50 + 18 * subtitleLines.length;
  const height = top + Math.max(1, bars.length) * (barHeight + gap) + 40;
  const maxLog = Math.max(1, ...bars.map((bar) => Math.ceil(Math.log10(Math.max(bar.r, 1 / bar.r)))));
  const plot = width - left - right;
  const x = (r: number) => left + plot / 2 + (Math.log10(r) / maxLog) * (plot / 2);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="13">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="600">${escapeXml(title)}</text>`,
    ...subtitleLines.map(
      (line, i) => `<text x="16" y="${44 + 18 * i}" fill="#555" font-size="12">${escapeXml(line)}</text>`,
    ),
  ];
  for (let tick = -maxLog; tick <= maxLog; tick++) {
    const tx = x(10 ** tick);
    parts.push(
      `<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${height - 30}" stroke="${tick === 0 ? '#333' : '#ddd'}"/>`,
      `<text x="${tx}" y="${height - 14}" text-anchor="middle" fill="#555">${tick >= 0 ? `${10 ** tick}×` : `1/${10 ** -tick}×`}</text>`,
    );
  }
  bars.forEach(({ row, r }, i) => {
    const y = top + i * (barHeight + gap);
    const x0 = x(1);
    const x1 = x(r);
    const ahead = r >= 1;
    parts.push(
      `<text x="${left - 10}" y="${y + barHeight / 2 + 4}" text-anchor="end">${escapeXml(`${row.workload} ${row.measure}`)}</text>`,
      `<rect x="${Math.min(x0, x1)}" y="${y}" width="${Math.max(1, Math.abs(x1 - x0))}" height="${barHeight}" fill="${ahead ? '#2e7d32' : '#c62828'}"/>`,
      `<text x="${ahead ? x1 + 6 : x1 - 6}" y="${y + barHeight / 2 + 4}" text-anchor="${ahead ? 'start' : 'end'}">${r.toFixed(2)}×</text>`,
    );
  });
  if (bars.length === 0)
    parts.push(`<text x="${left}" y="${top + 16}" fill="#555">no etcd figures in this run</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
