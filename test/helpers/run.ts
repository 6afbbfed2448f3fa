// Moved to tools/run.ts (shared with the bench scripts); tests keep importing it from here.
export * from '../../tools/run.js';
