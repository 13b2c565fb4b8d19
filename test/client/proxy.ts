// A TCP proxy in front of one node, so a test can do to a client's connection what a network does:
// cut it, hold back what the node sends, or refuse new connections.

import { connect, createServer, type Server, type Socket } from 'node:net';

export class TcpProxy {
  private readonly pairs = new Set<{ client: Socket; upstream: Socket }>();
  private accepting = true;

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(targetUrl: string): Promise<TcpProxy> {
    const target = new URL(targetUrl);
    let proxy: TcpProxy | null = null;
    const server = createServer((client) => {
      if (proxy === null || !proxy.accepting) {
        client.destroy();
        return;
      }
      const upstream = connect(Number(target.port), target.hostname);
      const pair = { client, upstream };
      proxy.pairs.add(pair);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        proxy?.pairs.delete(pair);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    proxy = new TcpProxy(server, `ws://127.0.0.1:${port}`);
    return proxy;
  }

  /** Destroys every connection through the proxy, on both sides at once. */
  cut(): void {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Holds back everything the node sends until `resume()`; what the client sends still goes through. */
  hold(): void {
    for (const { client, upstream } of this.pairs) {
      upstream.unpipe(client);
      upstream.pause();
    }
  }

  resume(): void {
    for (const { client, upstream } of this.pairs) upstream.pipe(client);
  }

  /** Cuts every connection and refuses new ones: the node is unreachable from now on. */
  async stop(): Promise<void> {
    this.accepting = false;
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
