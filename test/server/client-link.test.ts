// The gateway's side of a shared WebSocket (src/server/client-link.ts) on its own, against a raw client:
// a socket with no channel goes after `idleMs` (C7), a node-side channel close reaches the client as a
// close record before anything else ends, and `terminate` flushes what the tick queued before it closes.

import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import {
  MuxKind,
  MuxOutbox,
  muxProtocol,
  readMuxClose,
  readMuxMessage,
  toClient,
  toNode,
} from '../../src/mux.ts';
import { ClientCloseCode } from '../../src/protocol.ts';
import { type ChannelHandler, type ClientLink, SharedSocket } from '../../src/server/client-link.ts';

interface Harness {
  readonly client: WebSocket;
  readonly shared: SharedSocket;
  readonly links: ClientLink[];
  readonly events: string[];
  readonly received: string[];
  readonly closed: Promise<number>;
}

const servers: WebSocketServer[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

async function harness(idleMs: number, echo = true): Promise<Harness> {
  const server = new WebSocketServer({
    port: 0,
    host: '127.0.0.1',
    handleProtocols: (protocols) => (protocols.has(muxProtocol) ? muxProtocol : false),
  });
  servers.push(server);
  await once(server, 'listening');
  const events: string[] = [];
  const links: ClientLink[] = [];
  const accepted = new Promise<SharedSocket>((resolve) =>
    server.once('connection', (ws) => {
      const shared = new SharedSocket(ws, {
        idleMs,
        terminating: (reason) => events.push(`terminating ${reason}`),
        open: (link): ChannelHandler => {
          links.push(link);
          return {
            frame: (data) => {
              events.push(`frame ${data.toString()}`);
              if (echo) link.send(data);
            },
            closed: (goodbye) => events.push(`closed goodbye=${goodbye}`),
          };
        },
      });
      resolve(shared);
    }),
  );
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as { port: number }).port}`, [
    muxProtocol,
  ]);
  const received: string[] = [];
  client.on('message', (data: Buffer) => {
    const records: string[] = [];
    const problem = readMuxMessage(data, toClient, (channel, kind, payload) =>
      records.push(
        kind === MuxKind.frame
          ? `${channel}:${Buffer.from(payload).toString()}`
          : `${channel}:close ${JSON.stringify(readMuxClose(payload))}`,
      ),
    );
    expect(problem).toBeNull();
    received.push(records.join(' | '));
  });
  const closed = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)));
  await once(client, 'open');
  return { client, shared: await accepted, links, events, received, closed };
}

function send(client: WebSocket, records: readonly [number, string][]): void {
  const outbox = new MuxOutbox(toNode);
  for (const [channel, text] of records) outbox.pushFrame(channel, Buffer.from(text));
  for (const message of outbox.take()) client.send(message);
}

describe('shared socket, node side', () => {
  it('C7: a socket that never opens a channel is closed with 4002 after idleMs', async () => {
    const { closed, events } = await harness(150);
    const started = Date.now();
    expect(await closed).toBe(ClientCloseCode.helloTimeout);
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
    expect(events).toEqual(['terminating no channel open']);
  });

  it('C7: an open channel holds the idle close off; once the last channel closes, the idle clock starts again', async () => {
    const { client, closed, events, shared } = await harness(200);
    send(client, [[1, 'a']]);
    await new Promise((resolve) => setTimeout(resolve, 300)); // longer than idleMs: a channel is open
    expect(shared.channelCount).toBe(1);
    const outbox = new MuxOutbox(toNode);
    outbox.pushClose(1, 1000, 'done');
    client.send(outbox.take()[0]!);
    expect(await closed).toBe(ClientCloseCode.helloTimeout);
    expect(events).toEqual(['frame a', 'closed goodbye=true', 'terminating no channel open']);
  });

  it('frames of one tick for several channels leave in one message; a node-side close follows its frames', async () => {
    const { client, received, links, events } = await harness(5_000);
    send(client, [
      [1, 'one'],
      [2, 'two'],
    ]);
    while (received.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(received).toEqual(['1:one | 2:two']);
    links[0]!.send(Buffer.from('last'));
    links[0]!.close(ClientCloseCode.sessionEnded, 'SESSION_CLOSED');
    expect(links[0]!.open).toBe(false);
    links[0]!.send(Buffer.from('after close')); // dropped, as on a closed socket
    while (received.length === 1) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(received[1]).toBe('1:last | 1:close {"code":4006,"reason":"SESSION_CLOSED"}');
    // A node-side close is not reported back as the client's (the gateway forgot the connection itself).
    expect(events).toEqual(['frame one', 'frame two']);
    // Channel 1 is gone for good: its number opens nothing again.
    send(client, [
      [1, 'stale'],
      [2, 'still here'],
    ]);
    while (received.length === 2) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(received[2]).toBe('2:still here');
    client.close(1000);
  });

  it('terminate sends what the tick queued, then closes; every channel hears of it once, not as a goodbye', async () => {
    const { client, received, links, events, shared, closed } = await harness(5_000, false);
    send(client, [
      [1, 'x'],
      [2, 'y'],
    ]);
    while (links.length < 2) await new Promise((resolve) => setTimeout(resolve, 5));
    links[1]!.send(Buffer.from('bye'));
    shared.terminate(ClientCloseCode.shuttingDown, 'shutting down');
    shared.terminate(ClientCloseCode.shuttingDown, 'again'); // once only
    expect(await closed).toBe(ClientCloseCode.shuttingDown);
    expect(received).toEqual(['2:bye']);
    expect(events).toEqual([
      'frame x',
      'frame y',
      'terminating shutting down',
      'closed goodbye=false',
      'closed goodbye=false',
    ]);
    expect(links.every((link) => !link.open)).toBe(true);
  });
});
