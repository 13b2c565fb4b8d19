// A userspace TCP proxy for one directed peer link, standing in for `tc netem` (not available here).
//
// Node A reaches node B at the proxy's address (each node's cluster file lists its peers' proxies), so
// every connection A dials to B goes through "proxy A→B". The peer transport receives a peer's messages
// over the connection it dialed (docs/peer-transport.md, Topology), so proxy A→B carries B's messages to
// A: it is the directed message link B→A. The proxy understands just enough WebSocket (RFC 6455 framing,
// no extensions: the transport turns permessage-deflate off) to act on whole frames, the way a network
// acts on whole packets: it can drop a frame, delay it (order kept, as TCP keeps it), or black-hole the
// link. Cutting a TCP connection is a separate fault (`cut`).

import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';

export interface LinkFaults {
  /** Drop every frame (and refuse to complete new upgrades): a partition of this directed link. */
  readonly blocked: boolean;
  /** Added to every frame's delivery, plus up to `jitterMs` more; delivery order is kept. */
  readonly delayMs: number;
  readonly jitterMs: number;
  /** Probability that a data frame (text, binary) is dropped; control frames always pass. */
  readonly dropRate: number;
}

export const noFaults: LinkFaults = { blocked: false, delayMs: 0, jitterMs: 0, dropRate: 0 };

export interface LinkStats {
  framesPassed: number;
  framesDropped: number;
  framesDelayed: number;
  connections: number;
  cuts: number;
}

/** Frames bigger than this are passed through without being held in memory twice. */
const frameBytesMax = 64 * 1024 * 1024;

/** One byte direction of one proxied connection: parses frames and applies the link's faults. */
class Direction {
  private buffer: Buffer = Buffer.alloc(0);
  private upgraded = false;
  private releaseAtMs = 0;
  private destroyed = false;

  constructor(
    private readonly link: LinkProxy,
    private readonly out: Socket,
    private readonly kill: () => void,
  ) {}

  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    if (!this.upgraded) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.buffer.length > 16 * 1024) this.kill();
        return;
      }
      if (this.link.faults.blocked) {
        this.kill();
        return;
      }
      this.upgraded = true;
      this.deliver(this.buffer.subarray(0, end + 4), false);
      this.buffer = this.buffer.subarray(end + 4);
    }
    for (;;) {
      const size = frameSize(this.buffer);
      if (size === null) return;
      if (size > frameBytesMax) {
        this.kill();
        return;
      }
      const frame = this.buffer.subarray(0, size);
      this.buffer = this.buffer.subarray(size);
      const opcode = frame[0]! & 0x0f;
      this.deliver(frame, opcode <= 2);
    }
  }

  private deliver(bytes: Buffer, isData: boolean): void {
    const faults = this.link.faults;
    const stats = this.link.stats;
    if (faults.blocked || (isData && faults.dropRate > 0 && this.link.random() < faults.dropRate)) {
      stats.framesDropped++;
      return;
    }
    stats.framesPassed++;
    const delayMs = faults.delayMs + (faults.jitterMs > 0 ? this.link.random() * faults.jitterMs : 0);
    const nowMs = performance.now();
    if (delayMs <= 0 && this.releaseAtMs <= nowMs) {
      this.out.write(bytes);
      return;
    }
    stats.framesDelayed++;
    // Never overtake a frame sent earlier: TCP delivers in order.
    this.releaseAtMs = Math.max(this.releaseAtMs, nowMs + delayMs);
    const copy = Buffer.from(bytes);
    setTimeout(() => {
      if (!this.destroyed && !this.out.destroyed) this.out.write(copy);
    }, this.releaseAtMs - nowMs);
  }

  close(): void {
    this.destroyed = true;
  }
}

/** Total bytes of the frame at the start of `buffer`, or null if its header is not complete yet. */
export function frameSize(buffer: Buffer): number | null {
  if (buffer.length < 2) return null;
  const masked = (buffer[1]! & 0x80) !== 0;
  let length = buffer[1]! & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buffer.length < 4) return null;
    length = buffer.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buffer.length < 10) return null;
    length = Number(buffer.readBigUInt64BE(2));
    offset = 10;
  }
  const size = offset + (masked ? 4 : 0) + length;
  return buffer.length >= size || size > frameBytesMax ? size : null;
}

export class LinkProxy {
  faults: LinkFaults = noFaults;
  readonly stats: LinkStats = {
    framesPassed: 0,
    framesDropped: 0,
    framesDelayed: 0,
    connections: 0,
    cuts: 0,
  };
  private readonly sockets = new Set<{ client: Socket; upstream: Socket }>();
  private closed = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly random: () => number,
  ) {}

  /** Listens on a free loopback port and forwards every connection to `targetPort`. */
  static async start(options: {
    readonly targetPort: number;
    readonly random: () => number;
    readonly port?: number;
  }): Promise<LinkProxy> {
    let proxy: LinkProxy | null = null;
    const server = createServer({ noDelay: true }, (client) => proxy?.accept(client, options.targetPort));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    const { port } = server.address() as { port: number };
    proxy = new LinkProxy(server, port, options.random);
    return proxy;
  }

  private accept(client: Socket, targetPort: number): void {
    if (this.closed) {
      client.destroy();
      return;
    }
    this.stats.connections++;
    const upstream = tcpConnect({ port: targetPort, host: '127.0.0.1', noDelay: true });
    const pair = { client, upstream };
    this.sockets.add(pair);
    const kill = () => {
      up.close();
      down.close();
      client.destroy();
      upstream.destroy();
      this.sockets.delete(pair);
    };
    const up = new Direction(this, upstream, kill);
    const down = new Direction(this, client, kill);
    client.on('data', (chunk: Buffer) => up.push(chunk));
    upstream.on('data', (chunk: Buffer) => down.push(chunk));
    client.on('error', kill).on('close', kill);
    upstream.on('error', kill).on('close', kill);
  }

  /** Resets every connection through this link (both ends see the TCP connection drop). */
  cut(): void {
    for (const { client, upstream } of [...this.sockets]) {
      client.destroy();
      upstream.destroy();
    }
    this.sockets.clear();
    this.stats.cuts++;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
