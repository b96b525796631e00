import { defineProject } from 'vitest/config';

export default defineProject({
  resolve: { conditions: ['@nsa/source'] },
  ssr: { resolve: { conditions: ['@nsa/source'] } },
  test: { name: '@nsa/test', include: ['*.test.ts'], testTimeout: 300_000, hookTimeout: 120_000 },
});
