// Errors the SDK throws, and the ones an agent throws to say how it failed.

/** The server answered with a problem (`application/problem+json`). */
export class AgentqError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} detail
   * @param {unknown} [body]
   */
  constructor(status, code, detail, body) {
    super(`${status} ${code}: ${detail}`);
    this.name = "AgentqError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
  }

  /** The fields a 422 names. @returns {{field: string, code: string, message: string}[]} */
  get errors() {
    const body = /** @type {any} */ (this.body);
    return Array.isArray(body?.errors) ? body.errors : [];
  }
}

/** agentq could not be reached, or stayed unavailable, for longer than the SDK retries. */
export class Unavailable extends Error {
  /** @param {string} message @param {unknown} [cause] */
  constructor(message, cause) {
    super(message, { cause });
    this.name = "Unavailable";
  }
}

/** Throw from an agent for a failure no retry can fix: the run fails at once. */
export class Permanent extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "Permanent";
  }
}

/**
 * The run's output stream holds as much as the server allows (`--max-stream-bytes`):
 * nothing of the refused part was stored. Unhandled, it fails the run for good.
 */
export class StreamFull extends Permanent {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "StreamFull";
  }
}

/**
 * Thrown from a context call of an agent whose attempt lost its run (cancelled, finished,
 * or its lease ran out): stop the agent.
 */
export class AttemptLost extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "AttemptLost";
  }
}

/**
 * Thrown by `ctx.waitFor` when no signal is there yet: the run now waits and this attempt
 * ends. Let it propagate; the agent is called again, from its checkpoint, when a signal
 * arrives.
 */
export class Suspended extends Error {
  constructor() {
    super("the run waits for a signal");
    this.name = "Suspended";
  }
}
