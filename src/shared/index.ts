export * from './contract';
export * from './errors';
export * from './settings';
export * from './status';
export * from './wire';
export * from './generation';
export * from './library';
export * from './checkpoint';
