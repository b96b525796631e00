#!/usr/bin/env bash
# Stages what the GPU host needs to run the webgpu parity grid and benchmark, without the dev
# toolchain: built JavaScript of core, reference, webgpu and the parity suite, plus the `webgpu`
# npm package's Linux x64 runtime (Dawn). Writes into $STAGE (default .wgpu-gpu) at the repo root;
# nothing is written into other packages' folders.
#   bash packages/webgpu/scripts/stage-gpu.sh
# On the host (carry [".gpu", "$STAGE"]):
#   source .gpu/boot.sh && cd $STAGE && node node_modules/@nsa/test/dist/run-parity.js --backend webgpu --scale ci
#   source .gpu/boot.sh && cd $STAGE && node node_modules/@nsa/webgpu/bench/run.mjs
#   source .gpu/boot.sh && cd $STAGE && node node_modules/@nsa/webgpu/bench/profile.mjs   # GPU time per kernel
# (on the H100: NSA_WEBGPU_DAWN_OPTIONS="enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia
#  disable-dawn-features=timestamp_quantization" for float16 and unquantized timestamps; BENCHMARKS.md, run 3)
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
STAGE=${STAGE:-.wgpu-gpu}
nm="$STAGE/node_modules"
rm -rf "$STAGE"
mkdir -p "$nm/@nsa" "$nm/webgpu/dist/linux-x64"
tsc="$root/packages/webgpu/node_modules/.bin/tsc"
build() { # package dir, staged name
  "$tsc" -p "$1/tsconfig.build.json" --outDir "$nm/@nsa/$2/dist" --declaration false --declarationMap false --sourceMap false
  cp "$1/package.json" "$nm/@nsa/$2/"
}
build packages/core core
build packages/reference reference
build packages/webgpu webgpu
build test test
cp -r packages/webgpu/bench "$nm/@nsa/webgpu/"
dawn=packages/webgpu/node_modules/webgpu
cp "$dawn/index.js" "$dawn/package.json" "$nm/webgpu/"
cp "$dawn/dist/linux-x64/dawn.node" "$nm/webgpu/dist/linux-x64/"
du -sh "$STAGE"
