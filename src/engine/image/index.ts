export * from './pixels';
export * from './resize';
export * from './preview';
export * from './mask';
export * from './watermark';
export * from './canny';
