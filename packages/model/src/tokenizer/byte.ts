import { NSAShapeError } from '@nsa/core';

/** Byte-level tokenizer: a token is one byte of the UTF-8 encoding (vocabulary 256, no unknowns). */
export class ByteTokenizer {
  readonly vocabSize = 256;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder('utf-8');

  encode(text: string): number[] {
    return Array.from(this.#encoder.encode(text));
  }

  /** Bytes that are not valid UTF-8 decode to U+FFFD. */
  decode(tokens: readonly number[]): string {
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t > 255) throw new NSAShapeError(`token ${i} is ${t}, not a byte (0..255)`);
    }
    return this.#decoder.decode(Uint8Array.from(tokens));
  }
}
