import { TensorBase, type DType, type HostArray } from '../src/index.js';

/** A host tensor for testing core's checks without a backend. */
export class FakeTensor extends TensorBase {
  released = 0;
  constructor(shape: readonly number[], dtype: DType = 'float32', backend = 'fake') {
    super(shape, dtype, backend);
  }
  protected async readData(): Promise<HostArray> {
    return new Float32Array(this.size).fill(1);
  }
  protected release(): void {
    this.released++;
  }
}
