export { ReferenceDenseOps } from './ops.js';
