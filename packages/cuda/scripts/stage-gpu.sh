#!/usr/bin/env bash
# Stages what the GPU host needs into <repo>/.gpuwork (git-ignored, carried by the device tool):
# node_modules/@nsa/{core,reference,cuda,test} as package.json + dist, and the built addon.
# The host has no Node toolchain: it runs these plain Node programs over built output.
#   GPUWORK=.gpuwork-x ADDON=packages/cuda/build-x/Release/nsa_cuda.node bash stage-gpu.sh
# stages into another folder (several people staging at once) with another build's addon.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
for p in packages/core packages/reference packages/cuda test; do (cd "$p" && npx tsc -p tsconfig.build.json); done
work=${GPUWORK:-.gpuwork}
addon=${ADDON:-packages/cuda/build/Release/nsa_cuda.node}
rm -rf "$work" && mkdir -p "$work/node_modules/@nsa"
for p in core:packages/core reference:packages/reference cuda:packages/cuda test:test; do
  name=${p%%:*}; dir=${p#*:}
  mkdir -p "$work/node_modules/@nsa/$name"
  cp "$dir/package.json" "$work/node_modules/@nsa/$name/"
  cp -r "$dir/dist" "$work/node_modules/@nsa/$name/"
done
cp -r packages/cuda/bench packages/cuda/scripts "$work"/node_modules/@nsa/cuda/
if [[ -f "$addon" ]]; then
  mkdir -p "$work/node_modules/@nsa/cuda/build/Release"
  cp "$addon" "$work/node_modules/@nsa/cuda/build/Release/"
fi
du -sh "$work"
