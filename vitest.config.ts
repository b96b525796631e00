import { defineConfig } from 'vitest/config';

// One vitest project per package plus the cross-backend parity suite in test/.
// `@nsa/source` makes workspace imports resolve to TypeScript sources, so tests need no build.
export default defineConfig({
  resolve: { conditions: ['@nsa/source'] },
  ssr: { resolve: { conditions: ['@nsa/source'] } },
  test: {
    projects: ['packages/*', 'apps/*', 'test'],
    reporters: ['default', './scripts/summary-reporter.ts'],
  },
});
