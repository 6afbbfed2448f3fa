// Moved to tools/paths.ts (shared with the bench scripts); tests keep importing it from here.
export * from '../../tools/paths.js';
