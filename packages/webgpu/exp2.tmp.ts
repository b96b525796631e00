import { createWebGPUBackend } from '/work/main/packages/webgpu/src/node.ts';
const be = await createWebGPUBackend();
const d = be.ctx.device;
async function t(name: string, fn: () => Promise<void> | void, n = 50) {
  await fn();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  console.log(name, ((performance.now() - t0) / n).toFixed(3), 'ms');
}
await t('push+pop x3 sequential', async () => { d.pushErrorScope('internal'); d.pushErrorScope('out-of-memory'); d.pushErrorScope('validation'); await d.popErrorScope(); await d.popErrorScope(); await d.popErrorScope(); });
await t('push+pop x3 parallel', async () => { d.pushErrorScope('internal'); d.pushErrorScope('out-of-memory'); d.pushErrorScope('validation'); await Promise.all([d.popErrorScope(), d.popErrorScope(), d.popErrorScope()]); });
await t('onSubmittedWorkDone', async () => { await d.queue.onSubmittedWorkDone(); });
await t('createBuffer+destroy', () => { const b = d.createBuffer({ size: 1 << 20, usage: 0x80 }); b.destroy(); });
await t('mapped uniform', () => { const b = d.createBuffer({ size: 256, usage: 0x40, mappedAtCreation: true }); new Uint8Array(b.getMappedRange()).fill(1); b.unmap(); b.destroy(); });
await t('empty submit', () => { d.queue.submit([d.createCommandEncoder().finish()]); });
be.dispose();
