// The live dashboard (`GET /`, `GET /dashboard.json`) on a real 3-node cluster: admin credentials
// required, the JSON view, and the page in headless Chromium (Debian's, driven by playwright-core)
// following lock traffic live — owner, sequence, waiters, events — with user-chosen names shown as
// text, never markup. The browser part is skipped when /usr/bin/chromium is missing.

import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { connect, SessionLockScope } from 'raftlock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpUrl } from '../../src/cli/status.ts';
import type { DashboardView } from '../../src/server/dashboard.ts';
import { TestCluster } from '../server/harness.ts';
import { colourStats } from './png.ts';

const chromiumPath = process.env.RAFTLOCK_CHROMIUM ?? '/usr/bin/chromium';
const hasChromium = existsSync(chromiumPath);
if (!hasChromium) {
  console.warn(
    `test/dashboard: SKIPPING the browser test — no Chromium at ${chromiumPath} ` +
      '(apt-get install -y chromium, or set RAFTLOCK_CHROMIUM)',
  );
}

const admin = { principal: 'control', password: 'password' } as const;
const basic = (principal: string, password: string) =>
  `Basic ${Buffer.from(`${principal}:${password}`).toString('base64')}`;
/** A lock name that would run script and load an image if the page ever parsed it as HTML. */
const hostileName = `dash/<script>window.__xss='script'</script><img src=x onerror="window.__xss='img'">&amp;`;

describe('dashboard on a real cluster', () => {
  let cluster: TestCluster;
  let usersDir: string;

  beforeAll(async () => {
    usersDir = mkdtempSync(join(tmpdir(), 'raftlock-dashboard-users-'));
    const usersFile = join(usersDir, 'users.json');
    writeFileSync(
      usersFile,
      JSON.stringify({
        users: [
          { principal: admin.principal, password: admin.password, roles: ['admin'] },
          { principal: 'viewer', password: 'viewer-password', roles: ['reader'] },
        ],
      }),
    );
    cluster = await TestCluster.create(3, ['--users', usersFile]);
    await cluster.waitForLeader(30_000);
  });

  afterAll(async () => {
    await cluster?.destroy();
    if (usersDir !== undefined) rmSync(usersDir, { recursive: true, force: true });
  });

  it('asks for an admin login, then serves the page and the JSON view', async () => {
    const base = httpUrl(cluster.urls[0]!);
    const anonymous = await fetch(`${base}/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
    expect((await fetch(`${base}/dashboard.json`)).status).toBe(401);
    const wrong = await fetch(`${base}/dashboard.json`, {
      headers: { authorization: basic('control', 'nope') },
    });
    expect(wrong.status).toBe(401);
    const reader = await fetch(`${base}/dashboard.json`, {
      headers: { authorization: basic('viewer', 'viewer-password') },
    });
    expect(reader.status).toBe(403);
    expect(((await reader.json()) as { error: { code: string } }).error.code).toBe('PERMISSION_DENIED');

    const authorization = basic(admin.principal, admin.password);
    const page = await fetch(`${base}/`, { headers: { authorization } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'sha256-[^']+'/);
    expect(page.headers.get('content-security-policy')).not.toContain('unsafe-inline');
    const html = await page.text();
    expect(html).toContain('<script>');
    expect(html).not.toMatch(/<(script|link)[^>]+(src|href)=/); // self-contained

    const session = await connect({ servers: [cluster.urls[0]!], ...admin });
    try {
      const lock = await session.lock('dash/json');
      const leader = await cluster.waitForLeader();
      let view: DashboardView | null = null;
      await cluster.waitFor(
        async () => {
          const response = await fetch(`${base}/dashboard.json`, { headers: { authorization } });
          expect(response.status).toBe(200);
          expect(response.headers.get('content-type')).toBe('application/json');
          view = (await response.json()) as DashboardView;
          return view.locks.rows.some((row) => row.name === 'dash/json');
        },
        15_000,
        'the lock to show in /dashboard.json',
      );
      const shown = view as unknown as DashboardView;
      expect(shown.node.id).toBe('n1');
      expect(shown.node.leader).toBe(leader);
      expect(shown.members.map((member) => member.id)).toEqual(['n1', 'n2', 'n3']);
      expect(shown.members.filter((member) => member.role === 'leader').map((m) => m.id)).toEqual([leader]);
      expect(shown.members.every((member) => member.dashboardUrl?.startsWith('http://127.0.0.1:'))).toBe(
        true,
      );
      expect(shown.locks.rows.find((row) => row.name === 'dash/json')).toEqual({
        name: 'dash/json',
        owner: session.sessionId,
        ownerPrincipal: 'control',
        sequence: lock.getSequence(),
        scope: SessionLockScope.UNLOCK_ON_SESSION_LOSS,
        waiters: [],
        waiterCount: 0,
      });
      expect(shown.sessions.rows.find((row) => row.id === session.sessionId)).toMatchObject({
        principal: 'control',
        connected: true,
      });
      expect(shown.events.rows.some((event) => event.kind === 'granted' && event.name === 'dash/json')).toBe(
        true,
      );
      await lock.unlock();
    } finally {
      await session.close();
    }
  });

  it.skipIf(!hasChromium)(
    'shows owner, sequence, waiters and events live in Chromium, names as text; screenshot',
    async () => {
      const startedMs = Date.now();
      const { chromium } = await import('playwright-core');
      const a = await connect({ servers: cluster.urls, ...admin });
      const b = await connect({ servers: cluster.urls, ...admin });
      let browser: Browser | null = null;
      const shots = mkdtempSync(join(tmpdir(), 'raftlock-dashboard-shot-'));
      try {
        const held = await a.lock('dash/orders');
        const hostile = await a.lock(hostileName);
        const waiting = b.lock('dash/orders');
        const leader = await cluster.waitForLeader();
        browser = await chromium.launch({
          executablePath: chromiumPath,
          // Root in a container has no user namespaces for Chromium's sandbox.
          args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
          timeout: 60_000,
        });
        const context = await browser.newContext({
          httpCredentials: { username: admin.principal, password: admin.password },
          viewport: { width: 1400, height: 1000 },
        });
        const page = await context.newPage();
        const pageErrors: string[] = [];
        page.on('pageerror', (error) => pageErrors.push(error.message));
        page.on('console', (message) => {
          if (message.type() === 'error') pageErrors.push(message.text());
        });
        page.setDefaultTimeout(30_000);
        const response = await page.goto(`${httpUrl(cluster.node(leader).url)}/`);
        expect(response?.status()).toBe(200);

        // The owner, its sequence and the waiter, once a poll has shown them.
        const ordersRow = page.locator('#locks-body tr[data-lock="dash/orders"]');
        await ordersRow.locator('.waiter', { hasText: String(b.sessionId) }).waitFor();
        const cells = async () => ordersRow.locator('td').allTextContents();
        expect(await cells()).toEqual([
          'dash/orders',
          `${a.sessionId} (control)`,
          String(held.getSequence()),
          'session',
          String(b.sessionId),
        ]);
        expect(await page.locator('#node-id').textContent()).toBe(leader);
        expect(await page.locator('#node-role').textContent()).toBe('leader');
        expect(Number(await page.locator('#term').textContent())).toBeGreaterThan(0);
        expect(await page.locator('#members-body tr').count()).toBe(3);
        expect(await page.locator('#members-body .role-leader').count()).toBe(1);
        for (const session of [a, b]) {
          expect(
            await page.locator(`#sessions-body tr[data-session="${session.sessionId}"] td`).allTextContents(),
          ).toEqual([
            String(session.sessionId),
            'control',
            'connected',
            '0',
            session === a ? '2' : '0',
            session === a ? '0' : '1',
          ]);
        }
        expect(
          await page.locator('#events li[data-kind="waiting"]', { hasText: 'dash/orders' }).count(),
        ).toBe(1);

        // The hostile name is text: shown verbatim, nothing ran, no element came from it.
        const hostileRow = page.locator('#locks-body tr', {
          has: page.locator('td.name', { hasText: 'dash/<script>' }),
        });
        expect(await hostileRow.locator('td.name').textContent()).toBe(hostileName);
        expect(await hostileRow.locator('td').nth(2).textContent()).toBe(String(hostile.getSequence()));
        expect(
          await page.evaluate(() => (globalThis as unknown as { __xss?: string }).__xss),
        ).toBeUndefined();
        expect(await page.locator('main script, main img, header script, header img').count()).toBe(0);
        expect(
          await page.locator('#events li', { hasText: "window.__xss='script'" }).count(),
        ).toBeGreaterThan(0);

        // Live: unlock, and the same page (not reloaded) shows b as owner with a new sequence and no waiter.
        await page.evaluate(() => {
          (globalThis as unknown as { __sameDocument: boolean }).__sameDocument = true;
        });
        await held.unlock();
        const second = await waiting;
        expect(second.getSequence()).toBeGreaterThan(held.getSequence());
        await ordersRow.locator('td', { hasText: `${b.sessionId} (control)` }).waitFor();
        expect(await cells()).toEqual([
          'dash/orders',
          `${b.sessionId} (control)`,
          String(second.getSequence()),
          'session',
          '',
        ]);
        await page.locator('#events li[data-kind="released"]', { hasText: 'dash/orders' }).waitFor();
        expect(
          await page.locator('#events li[data-kind="released"]', { hasText: 'dash/orders' }).textContent(),
        ).toContain(': unlock');
        expect(
          await page.evaluate(() => (globalThis as unknown as { __sameDocument?: boolean }).__sameDocument),
        ).toBe(true);
        expect(await page.locator('#conn').getAttribute('class')).toBe('');

        const shot = join(shots, 'dashboard.png');
        await page.screenshot({ path: shot, fullPage: true });
        const bytes = statSync(shot).size;
        const stats = colourStats(readFileSync(shot));
        console.info(
          `test/dashboard: screenshot ${bytes} bytes, ${stats.width}×${stats.height}, ${stats.colours} colours, ` +
            `dominant ${(stats.dominantShare * 100).toFixed(1)} %, browser test ${Date.now() - startedMs} ms`,
        );
        expect(bytes).toBeGreaterThan(10 * 1024);
        expect(stats.width).toBe(1400);
        expect(stats.colours).toBeGreaterThan(50);
        expect(stats.dominantShare).toBeLessThan(0.9);

        // A follower's dashboard shows the same lock table (every replica applies every entry).
        const follower = cluster.nodes.find((node) => node.id !== leader)!;
        await page.goto(`${httpUrl(follower.url)}/`);
        await page
          .locator('#locks-body tr[data-lock="dash/orders"] td', { hasText: `${b.sessionId} (control)` })
          .waitFor();
        expect(await page.locator('#node-role').textContent()).toBe('follower');
        expect(await page.locator('#members-body .role-leader').textContent()).toBe('leader');
        expect(pageErrors).toEqual([]);
        await second.unlock();
        await hostile.unlock();
      } finally {
        await browser?.close();
        await Promise.all([a.close(), b.close()]);
        // KEEP_TEST_DATA=1 keeps the screenshot to look at (as the harness keeps the nodes' data).
        if (process.env.KEEP_TEST_DATA === undefined) rmSync(shots, { recursive: true, force: true });
        else console.info(`test/dashboard: screenshot kept in ${shots}`);
      }
    },
    180_000,
  );
});
