// Runs the needle main job from the sources: `npx tsx --conditions=@nsa/source scripts/needle.ts [steps]`.
import { NEEDLE_JOB_DEFAULTS, runNeedleJob } from '../src/index.js';

const steps = Number(process.argv[2] ?? NEEDLE_JOB_DEFAULTS.steps);
const result = await runNeedleJob({ steps, evalExamples: Number(process.argv[3] ?? 20) });
process.stdout.write(`${JSON.stringify({ finalLoss: result.finalLoss, seconds: result.totalSeconds })}\n`);
