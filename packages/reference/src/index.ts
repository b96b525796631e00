export { ReferenceTensor, roundArray, type ReferenceData } from './tensor.js';
export { ReferenceBackend, createReferenceBackend } from './backend.js';
export { referenceProvider } from './provider.js';
export { ReferenceDenseOps } from './dense/index.js';
export { ReferenceNSACache, type CacheStore } from './decode-cache.js';
export { ReferenceSaved } from './saved.js';
export type { NSAHostInputs, NSAHostShape } from './host-inputs.js';
export {
  nsaForwardHost,
  selectBlocksHost,
  selectionScoresHost,
  type SelectionScores,
  type NSAHostForward,
  type NSAForwardHostOptions,
} from './nsa-forward.js';
export { nsaBackwardHost, type NSAHostGradients, type NSABackwardHostOptions } from './nsa-backward.js';
export { nsaDecodeHost, type DecodeHostArgs } from './nsa-decode.js';
export { addSelectionScores, chooseBlocks, checkBlockIndices } from './selection.js';
export { KeyRanges } from './branches/key-ranges.js';
export {
  attendForward,
  attendBackward,
  attendProbabilities,
  type KVView,
  type KVGrads,
  type HeadGroup,
  type QueryForward,
  type QueryBackward,
} from './branches/attend.js';
export {
  attentionForwardHost,
  attentionBackwardHost,
  type AttentionHostShape,
  type AttentionHostForward,
  type AttentionHostGradients,
} from './dense-attention.js';
export { compressPlan, type CompressConfig, type CompressShape, type CompressPlan } from './compressors/blocks.js';
export { meanCompress, meanCompressBackward } from './compressors/mean.js';
export {
  mlpCompress,
  mlpCompressBackward,
  createMLPCompressorWeights,
  type MLPCompressorWeights,
  type MLPCompressorGradients,
} from './compressors/mlp.js';
