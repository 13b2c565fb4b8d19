// Typed storage failures. Every one is an operating error (bad disk, wrong directory, closed handle),
// never a programmer error: those are assertions. They sit under the shared `RaftlockError` with the
// wire code INTERNAL (UNAVAILABLE for a closed store) — none of them is a client's doing — and carry
// their own `storageFailure` so the node and its logs can tell them apart without new wire codes.

import { type ErrorCode, RaftlockError } from '../errors.ts';

export type StorageFailure = 'corruption' | 'unsupportedFormat' | 'writeFailed' | 'closed';

export abstract class StorageError extends RaftlockError {
  abstract readonly storageFailure: StorageFailure;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/**
 * What is on disk is not what we wrote: a checksum mismatch, a gap in the log, an entry stored
 * under the wrong index, a missing or stray record. The node must stop rather than serve a state
 * that may silently diverge from its peers; an operator restores the node from its peers.
 */
export class StorageCorruptionError extends StorageError {
  override readonly name = 'StorageCorruptionError';
  readonly storageFailure = 'corruption';
  /** A readable name of the record at fault, for example `entry 42` or `snapshot chunk 7/0`. */
  readonly record: string;
  /** The raw LevelDB key, hex-encoded. */
  readonly keyHex: string;

  constructor(options: { record: string; key: Uint8Array; detail: string; cause?: unknown }) {
    super(
      'INTERNAL',
      `storage corruption in ${options.record} (key ${hex(options.key)}): ${options.detail}`,
      {
        cause: options.cause,
      },
    );
    this.record = options.record;
    this.keyHex = hex(options.key);
  }
}

/** The directory was written by a layout this code does not know (a newer raftlock, or not raftlock). */
export class StorageUnsupportedFormatError extends StorageError {
  override readonly name = 'StorageUnsupportedFormatError';
  readonly storageFailure = 'unsupportedFormat';

  constructor(message: string) {
    super('INTERNAL', message);
  }
}

/**
 * A batch write (or its fsync) failed. The storage is then failed for good: what reached the disk
 * is unknown, so the node must crash and recover from disk rather than keep going.
 */
export class StorageWriteFailedError extends StorageError {
  override readonly name = 'StorageWriteFailedError';
  readonly storageFailure = 'writeFailed';

  constructor(message: string, options: { cause: unknown }) {
    super('INTERNAL', message, options);
  }
}

export class StorageClosedError extends StorageError {
  override readonly name = 'StorageClosedError';
  readonly storageFailure = 'closed';

  constructor(message: string) {
    super('UNAVAILABLE', message);
  }
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
