import { existsSync } from 'node:fs';
import { defineProject } from 'vitest/config';

// SwiftShader (Debian's chromium package) is the adapter on machines without a GPU. Set before
// the test workers start so Dawn's Vulkan loader sees it.
const swiftshader = '/usr/lib/chromium/vk_swiftshader_icd.json';
if (!process.env.VK_ICD_FILENAMES && existsSync(swiftshader)) process.env.VK_ICD_FILENAMES = swiftshader;

export default defineProject({
  resolve: { conditions: ['@nsa/source'] },
  ssr: { resolve: { conditions: ['@nsa/source'] } },
  test: { name: '@nsa/webgpu', include: ['test/**/*.test.ts'], testTimeout: 600_000, hookTimeout: 120_000 },
});
