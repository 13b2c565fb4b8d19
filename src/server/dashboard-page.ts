// The dashboard's page, served as is at `GET /` (src/server/dashboard.ts): one static document with
// its CSS and script inline — no build step, no framework, nothing fetched from elsewhere. It holds no
// data; its script polls `dashboard.json` every second and renders every value with `textContent`, so
// names and principals are never parsed as markup. The Content-Security-Policy names the script and
// the style by hash: nothing else can run or load, even if markup did get in.

import { createHash } from 'node:crypto';

const style = `
:root { color-scheme: light; --fg: #1b1f24; --muted: #5c6570; --line: #d8dee4; --bg: #f6f8fa;
  --leader: #1a7f37; --candidate: #9a6700; --follower: #0969da; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px; padding: 12px 20px;
  background: #24292f; color: #fff; }
header h1 { font-size: 18px; margin: 0 12px 0 0; }
header .kv { color: #d0d7de; }
header .kv b { color: #fff; font-variant-numeric: tabular-nums; }
#conn { margin-left: auto; font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #1a7f37; }
#conn.stale { background: var(--bad); }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; padding: 16px 20px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; overflow: hidden; }
section h2 { font-size: 14px; margin: 0; padding: 8px 12px; background: #eef1f4; border-bottom: 1px solid var(--line); }
section h2 .count { color: var(--muted); font-weight: normal; margin-left: 6px; }
.scroll { max-height: 420px; overflow: auto; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #eef1f4; vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; position: sticky; top: 0; background: #fff; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
td.name { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; word-break: break-all; }
.more { padding: 6px 12px; color: var(--muted); font-size: 12px; }
.empty { padding: 10px 12px; color: var(--muted); }
.role { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff; font-size: 12px; background: var(--muted); }
.role-leader { background: var(--leader); }
.role-candidate, .role-preCandidate { background: var(--candidate); }
.role-follower { background: var(--follower); }
.yes { color: var(--leader); }
.no { color: var(--bad); }
.waiter { display: inline-block; margin: 0 4px 2px 0; padding: 0 6px; border-radius: 4px; background: #fff8c5; }
ol#events { list-style: none; margin: 0; padding: 0; }
ol#events li { padding: 3px 12px; border-bottom: 1px solid #eef1f4; font-size: 13px; }
ol#events .when { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: 8px; }
ol#events .kind { display: inline-block; min-width: 120px; font-weight: 600; }
.k-granted { color: var(--leader); }
.k-released { color: var(--bad); }
.k-role { color: var(--candidate); }
a { color: var(--follower); }
`;

const script = `
'use strict';
const pollMs = 1000;
let lastOkMs = 0;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) tr.append(cell);
  return tr;
}
function td(text, className) { return el('td', className, text); }
function setText(id, text) { document.getElementById(id).textContent = String(text); }
function roleBadge(role) { return el('span', 'role role-' + String(role).replace(/[^A-Za-z]/g, ''), role); }
function time(ms) { return new Date(ms).toISOString().slice(11, 23); }
function more(id, count, what) {
  const box = document.getElementById(id);
  box.textContent = count > 0 ? count + ' more ' + what + ' not shown' : '';
}

function renderNode(view) {
  const node = view.node;
  document.title = 'raftlock ' + node.id + ' (' + node.role + ')';
  setText('node-id', node.id);
  document.getElementById('node-role').replaceChildren(roleBadge(node.role));
  setText('term', node.term);
  setText('leader', node.leader === null ? 'none' : node.leader);
  setText('commit', node.commitIndex);
  setText('applied', node.appliedIndex);
  setText('snapshot', node.snapshotIndex);
  setText('connections', node.clientConnections);
}

function renderMembers(view) {
  const body = document.getElementById('members-body');
  body.replaceChildren(...view.members.map((member) => {
    const id = td('');
    if (member.dashboardUrl !== null && /^https?:[/][/]/.test(member.dashboardUrl)) {
      const link = el('a', '', member.id);
      link.href = member.dashboardUrl;
      id.append(link);
    } else id.textContent = member.id;
    if (member.id === view.node.id) id.append(' (this node)');
    const role = td('');
    role.append(roleBadge(member.role));
    const p = member.progress;
    return row([id, role, td(member.voter ? 'voter' : 'learner'),
      td(p === null ? '' : p.match, 'num'), td(p === null ? '' : p.next, 'num'), td(p === null ? '' : p.state)]);
  }));
  setText('members-count', view.members.length);
  setText('members-note', view.node.role === 'leader'
    ? 'replication progress as this leader tracks it'
    : 'as this node sees them; replication progress is shown on the leader');
}

function renderLocks(view) {
  const body = document.getElementById('locks-body');
  body.replaceChildren(...view.locks.rows.map((lock) => {
    const waiters = td('');
    for (const id of lock.waiters) waiters.append(el('span', 'waiter', id));
    if (lock.waiterCount > lock.waiters.length) waiters.append('+' + (lock.waiterCount - lock.waiters.length));
    const tr = row([td(lock.name, 'name'),
      td(lock.ownerPrincipal === null ? lock.owner : lock.owner + ' (' + lock.ownerPrincipal + ')'),
      td(lock.sequence, 'num'),
      td(lock.scope === 'UNLOCK_ON_CONNECTION_LOSS' ? 'connection' : 'session'),
      waiters]);
    tr.dataset.lock = lock.name;
    return tr;
  }));
  document.getElementById('locks-empty').hidden = view.locks.rows.length > 0;
  setText('locks-count', view.locks.total);
  more('locks-more', view.locks.more, 'locks (the first ' + view.limits.locksShownMax + ' by name are listed)');
}

function renderSessions(view) {
  const body = document.getElementById('sessions-body');
  body.replaceChildren(...view.sessions.rows.map((session) => {
    const tr = row([td(session.id, 'num'), td(session.principal, 'name'),
      td(session.connected ? 'connected' : 'disconnected', session.connected ? 'yes' : 'no'),
      td(session.connectionEpoch, 'num'), td(session.locks, 'num'), td(session.waits, 'num')]);
    tr.dataset.session = String(session.id);
    return tr;
  }));
  document.getElementById('sessions-empty').hidden = view.sessions.rows.length > 0;
  setText('sessions-count', view.sessions.total);
  more('sessions-more', view.sessions.more, 'sessions (the oldest ' + view.limits.sessionsShownMax + ' are listed)');
}

function describe(event) {
  switch (event.kind) {
    case 'granted': return event.name + ' → session ' + event.session + ', sequence ' + event.sequence;
    case 'released': return event.name + ' by session ' + event.session + ' (sequence ' + event.sequence + '): ' + event.reason;
    case 'scopeChanged': return event.name + ' of session ' + event.session + ' now ' + event.scope;
    case 'waiting': return 'session ' + event.session + ' waits for ' + event.name;
    case 'waitEnded': return 'session ' + event.session + ' stopped waiting for ' + event.name + ': ' + event.reason;
    case 'sessionOpened': return 'session ' + event.session + ' of ' + event.principal;
    case 'sessionReconnected': return 'session ' + event.session + ', connection ' + event.epoch;
    case 'connectionLost': return 'session ' + event.session + ', connection ' + event.epoch;
    case 'sessionEnded': return 'session ' + event.session + ': ' + event.reason;
    case 'role': return event.role + ' in term ' + event.term + (event.leader === null ? ', no leader' : ', leader ' + event.leader);
    case 'snapshotInstalled': return 'lock table replaced by a snapshot from the leader';
    default: return '';
  }
}

function renderEvents(view) {
  const list = document.getElementById('events');
  const rows = view.events.rows.slice().reverse();
  list.replaceChildren(...rows.map((event) => {
    const li = el('li');
    li.append(el('span', 'when', time(event.atMs) + (event.index === null ? '' : ' #' + event.index)),
      el('span', 'kind k-' + event.kind, event.kind), el('span', 'what', describe(event)));
    li.dataset.kind = event.kind;
    return li;
  }));
  document.getElementById('events-empty').hidden = rows.length > 0;
  setText('events-count', view.events.total);
}

async function poll() {
  try {
    const response = await fetch('dashboard.json', { cache: 'no-store', credentials: 'same-origin' });
    if (!response.ok) throw new Error('HTTP ' + response.status);
    const view = await response.json();
    renderNode(view);
    renderMembers(view);
    renderLocks(view);
    renderSessions(view);
    renderEvents(view);
    lastOkMs = Date.now();
    document.body.dataset.updates = String(Number(document.body.dataset.updates || '0') + 1);
    setText('conn', 'live · updated ' + time(view.builtAtMs));
    document.getElementById('conn').className = '';
  } catch (error) {
    const conn = document.getElementById('conn');
    conn.className = 'stale';
    conn.textContent = 'not updating: ' + (error && error.message ? error.message : error)
      + (lastOkMs === 0 ? '' : ' (last update ' + Math.round((Date.now() - lastOkMs) / 1000) + ' s ago)');
  } finally {
    setTimeout(poll, pollMs);
  }
}
poll();
`;

const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>raftlock</title>
<style>${style}</style>
</head>
<body>
<header>
  <h1>raftlock <span id="node-id">…</span></h1>
  <span id="node-role"></span>
  <span class="kv">term <b id="term">–</b></span>
  <span class="kv">leader <b id="leader">–</b></span>
  <span class="kv">commit <b id="commit">–</b></span>
  <span class="kv">applied <b id="applied">–</b></span>
  <span class="kv">snapshot <b id="snapshot">–</b></span>
  <span class="kv">client connections <b id="connections">–</b></span>
  <span id="conn" class="stale">connecting…</span>
</header>
<main>
  <section id="members">
    <h2>Members<span class="count" id="members-count"></span></h2>
    <div class="more" id="members-note"></div>
    <table><thead><tr><th>node</th><th>role</th><th>kind</th><th>match</th><th>next</th><th>state</th></tr></thead>
    <tbody id="members-body"></tbody></table>
  </section>
  <section id="locks">
    <h2>Locks<span class="count" id="locks-count"></span></h2>
    <div class="scroll"><table><thead><tr><th>name</th><th>owner (session)</th><th>sequence</th><th>scope</th><th>waiting sessions</th></tr></thead>
    <tbody id="locks-body"></tbody></table></div>
    <div class="empty" id="locks-empty">no lock is held</div>
    <div class="more" id="locks-more"></div>
  </section>
  <section id="sessions">
    <h2>Sessions<span class="count" id="sessions-count"></span></h2>
    <div class="scroll"><table><thead><tr><th>id</th><th>principal</th><th>connection</th><th>epoch</th><th>locks</th><th>waits</th></tr></thead>
    <tbody id="sessions-body"></tbody></table></div>
    <div class="empty" id="sessions-empty">no session is open</div>
    <div class="more" id="sessions-more"></div>
  </section>
  <section id="recent">
    <h2>Recent events<span class="count" id="events-count"></span></h2>
    <div class="scroll"><ol id="events"></ol></div>
    <div class="empty" id="events-empty">nothing applied since this node started</div>
  </section>
</main>
<script>${script}</script>
</body>
</html>
`;

function sha256(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

export const dashboardPage = {
  html,
  contentSecurityPolicy: [
    "default-src 'none'",
    `script-src ${sha256(script)}`,
    `style-src ${sha256(style)}`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
} as const;
