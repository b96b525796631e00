import type { StepReport } from './trainer.js';

export interface ProgressOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

/**
 * Loss and tokens/s while training: a redrawn progress bar on a terminal, plain lines every
 * `every` steps otherwise (logs, CI).
 */
export class ProgressReporter {
  #tokens = 0;
  #seconds = 0;
  #lossEma: number | undefined;
  readonly #started = performance.now();

  constructor(
    readonly total: number,
    readonly out: ProgressOutput = process.stdout,
    readonly every = 25,
    readonly label = 'train',
  ) {}

  update(r: StepReport): void {
    this.#tokens += r.tokens;
    this.#seconds += r.seconds;
    this.#lossEma = this.#lossEma === undefined ? r.loss : 0.9 * this.#lossEma + 0.1 * r.loss;
    const rate = this.#tokens / Math.max(this.#seconds, 1e-9);
    const stats = `step ${r.step}/${this.total} loss ${r.loss.toFixed(4)} (avg ${this.#lossEma.toFixed(4)}) lr ${r.lr.toExponential(2)} ${Math.round(rate)} tok/s`;
    if (this.out.isTTY) {
      const width = 24;
      const filled = Math.round((width * r.step) / this.total);
      this.out.write(`\r${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${stats}\x1b[K`);
      if (r.step === this.total) this.out.write('\n');
    } else if (r.step % this.every === 0 || r.step === this.total || r.step === 1) {
      this.out.write(`${this.label} ${stats}\n`);
    }
  }

  /** Seconds since the reporter was made. */
  get elapsed(): number {
    return (performance.now() - this.#started) / 1000;
  }
}
