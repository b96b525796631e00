import { NEEDLE_JOB_DEFAULTS, runNeedleJob } from '@nsa/model';
import { checkKnownOptions, intOption, parseArgs, stringOption } from '../args.js';

export const needleHelp = `nsa needle [--backend auto|NAME] [--steps N] [--seed N] [--out FILE.safetensors]
  Trains a small NSA transformer on the needle-in-a-haystack task on the best backend (or the
  named one), then prints the retrieval-accuracy grid over context lengths x needle depths, the
  time taken and the backend used. --out saves the trained model as a safetensors checkpoint.
  Defaults: --backend auto --steps ${NEEDLE_JOB_DEFAULTS.steps} --seed ${NEEDLE_JOB_DEFAULTS.seed}.`;

/** `nsa needle`: the model's main job. */
export async function needleCommand(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  checkKnownOptions(args, ['backend', 'steps', 'seed', 'out']);
  const out = args.options.has('out') ? stringOption(args, 'out', '') : undefined;
  await runNeedleJob({
    backend: stringOption(args, 'backend', 'auto'),
    steps: intOption(args, 'steps', NEEDLE_JOB_DEFAULTS.steps),
    seed: intOption(args, 'seed', NEEDLE_JOB_DEFAULTS.seed),
    out,
  });
}
