// Moved to tools/vm.ts (shared with the bench scripts); tests keep importing it from here.
export * from '../../tools/vm.js';
