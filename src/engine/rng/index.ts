export { TorchGenerator, batchNoise, randn, seedLow32 } from './torch-randn';
export type { Seed } from './torch-randn';
export { MT19937 } from './mt19937';
