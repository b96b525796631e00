#!/usr/bin/env node
// The parity grid as a plain Node program, for machines without the dev toolchain (the GPU host):
//   node test/dist/run-parity.js --backend cuda [--scale gpu|ci] [--dtypes float32,bfloat16] [--only TEXT]
import type { FloatDType } from '@nsa/core';
import { backendsUnderTest } from './backends.js';
import { attentionCases, nsaCases, type Scale } from './cases.js';
import { attentionParity, formatParity, nsaParity, type ParityRow } from './parity.js';

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const registry = await backendsUnderTest();
const name = option('backend', 'cuda');
const resolved = await registry.resolve(name);
const backend = resolved.backend;
const scale = option('scale', 'gpu') as Scale;
const dtypes = option('dtypes', backend.dtypes.join(',')).split(',') as FloatDType[];
const only = option('only', '');
console.log(`parity: ${name} on ${backend.device}, scale ${scale}, dtypes ${dtypes.join(', ')}`);
const rows: ParityRow[] = [];
const started = performance.now();
for (const c of nsaCases(scale, dtypes).filter((x) => x.name.includes(only))) {
  const t0 = performance.now();
  rows.push(...(await nsaParity(backend, c)));
  console.log(`  ${c.name}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
for (const c of attentionCases(scale, dtypes).filter((x) => x.name.includes(only))) {
  rows.push(...(await attentionParity(backend, c)));
  console.log(`  ${c.name}: done`);
}
console.log(formatParity(rows));
const failed = rows.filter((r) => !r.ok).length;
console.log(`\n${rows.length - failed} passed, ${failed} failed (${((performance.now() - started) / 1000).toFixed(0)} s)`);
backend.dispose();
process.exitCode = failed ? 1 : 0;
