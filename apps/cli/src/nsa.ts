#!/usr/bin/env node
import { NSAError } from '@nsa/core';
import { UsageError } from './args.js';
import { attentionCommand, attentionHelp } from './commands/attention.js';
import { backendsCommand, backendsHelp } from './commands/backends.js';
import { needleCommand, needleHelp } from './commands/needle.js';

const commands: Record<string, { help: string; run: (argv: string[]) => Promise<boolean> }> = {
  run: { help: `nsa run [options]\n  The main job: the same as \`nsa needle\`.`, run: needle },
  needle: { help: needleHelp, run: needle },
  attention: { help: attentionHelp, run: attentionCommand },
  backends: { help: backendsHelp, run: backendsCommand },
};

async function needle(argv: string[]): Promise<boolean> {
  await needleCommand(argv);
  return true;
}

function usage(): string {
  return `usage: nsa <command> [options]\n\n${Object.values(commands)
    .map((c) => c.help)
    .join('\n\n')}`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`nsa: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    return (await command.run(rest)) ? 0 : 1;
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`nsa ${name}: ${error.message}\n\n${command.help}`);
      return 2;
    }
    if (error instanceof NSAError) {
      console.error(`nsa ${name}: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

process.exitCode = await main(process.argv.slice(2));
