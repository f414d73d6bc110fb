export { SafetyChecker } from './checker';
export { safetyVerdicts, type SafetyCosines, type SafetyVerdict } from './decision';
export { CLIP_MEAN, CLIP_STD, clipImageInput } from './preprocess';
