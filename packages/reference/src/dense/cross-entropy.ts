/**
 * Mean softmax cross-entropy over rows of V; targets of -1 are ignored. With `withGradient`,
 * dLogits = (softmax - onehot) / count on counted rows and 0 elsewhere.
 */
export function crossEntropyKernel(
  logits: Float64Array,
  targets: Int32Array,
  V: number,
  withGradient: boolean,
): { loss: number; count: number; dLogits?: Float64Array } {
  const M = targets.length;
  let count = 0;
  for (let r = 0; r < M; r++) if (targets[r] >= 0) count++;
  const dLogits = withGradient ? new Float64Array(M * V) : undefined;
  let total = 0;
  for (let r = 0; r < M; r++) {
    const target = targets[r];
    if (target < 0) continue;
    const o = r * V;
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (logits[o + j] > max) max = logits[o + j];
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[o + j] - max);
    total += Math.log(sum) + max - logits[o + target];
    if (dLogits) {
      for (let j = 0; j < V; j++) dLogits[o + j] = Math.exp(logits[o + j] - max) / sum / count;
      dLogits[o + target] -= 1 / count;
    }
  }
  return { loss: count > 0 ? total / count : 0, count, dLogits };
}
