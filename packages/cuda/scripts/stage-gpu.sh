#!/usr/bin/env bash
# Stages what the GPU host needs into <repo>/.gpuwork (git-ignored, carried by the device tool):
# node_modules/@nsa/{core,reference,cuda,test} as package.json + dist, and the built addon.
# The host has no Node toolchain: it runs these plain Node programs over built output.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
for p in packages/core packages/reference packages/cuda test; do (cd "$p" && npx tsc -p tsconfig.build.json); done
rm -rf .gpuwork && mkdir -p .gpuwork/node_modules/@nsa
for p in core:packages/core reference:packages/reference cuda:packages/cuda test:test; do
  name=${p%%:*}; dir=${p#*:}
  mkdir -p ".gpuwork/node_modules/@nsa/$name"
  cp "$dir/package.json" ".gpuwork/node_modules/@nsa/$name/"
  cp -r "$dir/dist" ".gpuwork/node_modules/@nsa/$name/"
done
cp -r packages/cuda/bench packages/cuda/scripts .gpuwork/node_modules/@nsa/cuda/
if [[ -f packages/cuda/build/Release/nsa_cuda.node ]]; then
  mkdir -p .gpuwork/node_modules/@nsa/cuda/build/Release
  cp packages/cuda/build/Release/nsa_cuda.node .gpuwork/node_modules/@nsa/cuda/build/Release/
fi
du -sh .gpuwork
