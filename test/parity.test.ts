// The cross-backend parity suite: every available backend against the float64 reference, with
// the spec's tolerances. A backend that cannot run here is reported as skipped with its reason.
import { describe, expect, it } from 'vitest';
import { attentionCases, attentionParity, backendsUnderTest, formatParity, nsaCases, nsaParity } from './src/index.js';

const registry = await backendsUnderTest();
const probes = await registry.probeAll();

for (const { name, probe } of probes) {
  describe.skipIf(!probe.available)(`${name} parity${probe.available ? '' : ` (skipped: ${probe.reason})`}`, async () => {
    if (!probe.available) {
      it('needs the backend', () => {});
      return;
    }
    const backend = await registry.resolve(name).then((r) => r.backend);
    const dtypes = backend.dtypes.filter((d) => d !== 'float64');
    for (const c of nsaCases('ci', dtypes)) {
      it(`NSA ${c.name}`, async () => {
        const rows = await nsaParity(backend, c);
        const bad = rows.filter((r) => !r.ok);
        expect(bad, formatParity(bad)).toEqual([]);
      });
    }
    for (const c of attentionCases('ci', dtypes)) {
      it(c.name, async () => {
        const rows = await attentionParity(backend, c);
        const bad = rows.filter((r) => !r.ok);
        expect(bad, formatParity(bad)).toEqual([]);
      });
    }
  });
}
