// Moved to tools/servers.ts (shared with the bench scripts); tests keep importing it from here.
export * from '../../tools/servers.js';
