import type { ModelBackend } from '@nsa/core';

interface Disposable {
  dispose(): void;
}

function isDisposable(value: unknown): value is Disposable {
  return typeof value === 'object' && value !== null && typeof (value as Disposable).dispose === 'function';
}

/**
 * Owns the tensors made during one step (forward, backward, update) and frees them together, so
 * GPU memory does not depend on the garbage collector.
 */
export class Scope {
  #owned: Disposable[] = [];

  /** Takes ownership of a result: a tensor, a result object with dispose(), or a record of tensors. */
  adopt<T>(value: T): T {
    if (isDisposable(value)) this.#owned.push(value);
    else if (typeof value === 'object' && value !== null) {
      for (const field of Object.values(value)) if (isDisposable(field)) this.#owned.push(field);
    }
    return value;
  }

  dispose(): void {
    for (const value of this.#owned) value.dispose();
    this.#owned = [];
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** The backend with every result adopted by `scope` (the cache, which outlives a step, is not). */
export function scoped(backend: ModelBackend, scope: Scope): ModelBackend {
  return new Proxy(backend, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function' || prop === 'createNSACache' || prop === 'dispose' || prop === 'synchronize') {
        return typeof value === 'function' ? value.bind(target) : value;
      }
      return (...args: unknown[]) => {
        const result = (value as (...a: unknown[]) => unknown).apply(target, args);
        return result instanceof Promise ? result.then((r) => scope.adopt(r)) : scope.adopt(result);
      };
    },
  });
}
