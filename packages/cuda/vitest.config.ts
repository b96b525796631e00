import { defineProject } from 'vitest/config';

export default defineProject({
  resolve: { conditions: ['@nsa/source'] },
  ssr: { resolve: { conditions: ['@nsa/source'] } },
  test: { name: '@nsa/cuda', include: ['test/**/*.test.ts'] },
});
