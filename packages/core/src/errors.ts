/** Base class of every error this project throws on purpose; `code` is stable for programs to match. */
export class NSAError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A configuration field breaks one of the spec's rules. */
export class NSAConfigError extends NSAError {
  constructor(
    readonly field: string,
    readonly value: unknown,
    readonly rule: string,
  ) {
    super('NSA_CONFIG', `NSA config: ${field} = ${String(value)} is invalid: ${rule}`);
  }
}

/** A tensor argument has the wrong shape, dtype or backend. */
export class NSAShapeError extends NSAError {
  constructor(message: string) {
    super('NSA_SHAPE', message);
  }
}

/** A tensor was used after `dispose()`. */
export class DisposedTensorError extends NSAError {
  constructor(what: string) {
    super('NSA_DISPOSED', `${what} was used after dispose()`);
  }
}

/** A named backend cannot run on this machine; `reason` says why. */
export class BackendUnavailableError extends NSAError {
  constructor(
    readonly backend: string,
    readonly reason: string,
  ) {
    super('NSA_BACKEND_UNAVAILABLE', `backend '${backend}' is not available: ${reason}`);
  }
}

/** A backend does not implement an operation or dtype that was asked of it. */
export class UnsupportedError extends NSAError {
  constructor(message: string) {
    super('NSA_UNSUPPORTED', message);
  }
}
