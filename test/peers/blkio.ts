// Moved to tools/blkio.ts (shared with the bench scripts); tests keep importing it from here.
export * from '../../tools/blkio.js';
