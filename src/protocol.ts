// The client wire protocol (docs/protocol.md): frame types shared by the gateway (src/server) and the
// client library (src/client). A shared leaf like errors.ts: the client imports this, never server code.
// Every frame is one msgpackr-encoded object on a binary WebSocket message.

import type { ErrorCode } from './errors.ts';

export const clientProtocolVersion = 1;

/** The most bytes one client frame may have; the gateway's `maxPayload`. */
export const clientFrameBytesMax = 64 * 1024;

export type Scope = 'UNLOCK_ON_SESSION_LOSS' | 'UNLOCK_ON_CONNECTION_LOSS';

// --- client → server -----------------------------------------------------------------------------

export interface HelloFrame {
  readonly t: 'hello';
  readonly v: number;
  readonly principal: string;
  readonly password: string;
  /** Resume this session (after a reconnect) instead of opening a new one. */
  readonly session?: { readonly id: number; readonly token: string } | undefined;
  /** Asked-for reconnection window of a new session; the node's default when absent. */
  readonly reconnectionWindowMs?: number | undefined;
}

export type RequestBody =
  | {
      readonly op: 'lock';
      readonly requestNo: number;
      readonly name: string;
      readonly scope: Scope;
      readonly timeoutMs?: number | undefined;
    }
  | {
      readonly op: 'unlock';
      readonly requestNo: number;
      readonly name: string;
      readonly sequence?: number | undefined;
    }
  | { readonly op: 'cancel'; readonly requestNo: number }
  | { readonly op: 'close' }
  | { readonly op: 'ping' }
  | { readonly op: 'status' }
  | {
      readonly op: 'locks';
      readonly prefix?: string | undefined;
      readonly after?: string | undefined;
      readonly limit?: number | undefined;
    }
  // Membership (C5), each needing the `admin` permission (docs/protocol.md "Membership requests").
  | { readonly op: 'members' }
  | {
      readonly op: 'addMember';
      readonly member: string;
      /** HOST:PORT of the new member's peer port. */
      readonly peerAddress: string;
      /** ws:// or wss:// URL of the new member's client port. */
      readonly clientUrl: string;
    }
  | { readonly op: 'removeMember'; readonly member: string }
  | { readonly op: 'transferLeader'; readonly member: string };

export type RequestOp = RequestBody['op'];

export type RequestFrame = { readonly t: 'req'; readonly id: number } & RequestBody;

export type ClientFrame = HelloFrame | RequestFrame;

// --- server → client -----------------------------------------------------------------------------

export interface WireError {
  readonly code: ErrorCode;
  readonly message: string;
  /** With NOT_LEADER / TRANSFERRING: the leader's id and client URL, when known. */
  readonly leader?: string | undefined;
  readonly leaderUrl?: string | undefined;
}

export interface WelcomeFrame {
  readonly t: 'welcome';
  readonly v: number;
  readonly node: string;
  readonly session: {
    readonly id: number;
    readonly token: string;
    readonly epoch: number;
    readonly principal: string;
    readonly reconnectionWindowMs: number;
  };
  readonly resumed: boolean;
  /** The connection-loss bound the cluster applies (S10, C6). */
  readonly connectionTimeoutMs: number;
  /** Locks the session owns and requests it waits on, as of the welcome (useful after a resume). */
  readonly locks: readonly { readonly name: string; readonly sequence: number; readonly scope: Scope }[];
  readonly waits: readonly { readonly name: string; readonly requestNos: readonly number[] }[];
}

export interface LockView {
  readonly name: string;
  readonly owner: number;
  readonly sequence: number;
  readonly scope: Scope;
  readonly waiters: readonly number[];
}

export interface NodeStatus {
  readonly id: string;
  readonly role: string;
  readonly term: number;
  readonly leader: string | null;
  readonly leaderUrl: string | null;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly snapshotIndex: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly voters: readonly string[];
  /** Members that receive the log but do not vote (a node joining, before its promotion). */
  readonly learners: readonly string[];
  readonly sessions: number;
  readonly locks: number;
  readonly waiters: number;
  readonly clientConnections: number;
}

/** One member as the answering node knows it; `matchIndex` and `lag` only from the leader. */
export interface MemberView {
  readonly id: string;
  readonly role: 'voter' | 'learner';
  /** HOST:PORT of its peer port; null when this node does not know it. */
  readonly peerAddress: string | null;
  readonly clientUrl: string | null;
  readonly leader: boolean;
  /** The leader's view: the last log index known to be on that member. */
  readonly matchIndex?: number | undefined;
  /** The leader's view: entries it is behind the leader's last index. */
  readonly lag?: number | undefined;
}

export interface MembersResult {
  readonly kind: 'members';
  /** The node that answered, and the leader it knows. */
  readonly node: string;
  readonly leader: string | null;
  readonly members: readonly MemberView[];
}

export type ResultBody =
  | {
      readonly kind: 'granted';
      readonly name: string;
      readonly sequence: number;
      readonly scope: Scope;
      readonly held: boolean;
    }
  | { readonly kind: 'waiting'; readonly name: string }
  | { readonly kind: 'unlocked'; readonly owned: boolean }
  | { readonly kind: 'cancelled'; readonly outcome: 'withdrawn' | 'released' | 'none' }
  | { readonly kind: 'done' }
  | { readonly kind: 'pong'; readonly confirmed: boolean }
  | { readonly kind: 'status'; readonly status: NodeStatus }
  | { readonly kind: 'locks'; readonly locks: readonly LockView[] }
  | MembersResult;

export type ResponseFrame =
  | { readonly t: 'res'; readonly id: number; readonly ok: true; readonly result: ResultBody }
  | { readonly t: 'res'; readonly id: number; readonly ok: false; readonly error: WireError };

export type NoticeFrame =
  | {
      readonly t: 'notice';
      readonly notice: 'granted';
      readonly name: string;
      readonly sequence: number;
      readonly scope: Scope;
      readonly requestNos: readonly number[];
    }
  | {
      readonly t: 'notice';
      readonly notice: 'lost';
      readonly name: string;
      readonly sequence: number;
      readonly reason: string;
    }
  | {
      readonly t: 'notice';
      readonly notice: 'scopeChanged';
      readonly name: string;
      readonly sequence: number;
      readonly scope: Scope;
    }
  | {
      readonly t: 'notice';
      readonly notice: 'waitEnded';
      readonly name: string;
      readonly requestNo: number;
      readonly reason: string;
      readonly code: ErrorCode;
    }
  | { readonly t: 'notice'; readonly notice: 'sessionExpired' | 'sessionClosed' };

/** A fatal answer (bad hello, protocol error, not the leader): the server closes the socket after it. */
export interface ErrorFrame extends WireError {
  readonly t: 'error';
}

export type ServerFrame = WelcomeFrame | ResponseFrame | NoticeFrame | ErrorFrame;

/** WebSocket close codes the gateway uses (4000–4999 are the application's). */
export const ClientCloseCode = {
  normal: 1000,
  shuttingDown: 1001,
  protocolError: 4000,
  authenticationFailed: 4001,
  helloTimeout: 4002,
  notLeader: 4003,
  idle: 4004,
  replaced: 4005,
  sessionEnded: 4006,
  slowConsumer: 4007,
  overloaded: 4008,
} as const;
