export { parseArgs, intOption, stringOption, checkKnownOptions, UsageError, type ParsedArgs } from './args.js';
export { loadBackends } from './backends.js';
export { attentionCommand } from './commands/attention.js';
export { backendsCommand } from './commands/backends.js';
export { needleCommand } from './commands/needle.js';
