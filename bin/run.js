#!/usr/bin/env node
// stor's entry point: the conventions oclif leaves to a plugin or gets wrong for us, settled before
// oclif runs a command — `stor help [COMMAND]`, `-h`/`--help` anywhere, `-v`/`--version`, an unknown
// command as one `stor: ...` line (a JSON error with --json) and exit 2, NO_COLOR (no-color.org; chalk
// reads only FORCE_COLOR), and a reader of standard output that goes away (EPIPE: end quietly, 141).
if (process.env.NO_COLOR) process.env.FORCE_COLOR = '0';
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(141);
  throw e;
});

const { Config, Help, flush, handle, run } = await import('@oclif/core');

const argv = process.argv.slice(2);
const end = argv.indexOf('--');
const options = end < 0 ? argv : argv.slice(0, end);
const json = options.includes('--json');

function usageError(message, hint) {
  process.exitCode = 2;
  if (json) process.stdout.write(JSON.stringify({ error: { code: 2, message, hint } }) + '\n');
  else process.stderr.write(`stor: ${message}\n  ${hint}\n`);
}

const config = await Config.load(import.meta.url);
const commands = config.commandIDs.filter((id) => !config.findCommand(id)?.hidden).sort();
const accepted = `accepted: ${commands.join(', ')} (stor help lists them, stor help COMMAND explains one)`;

async function help(subject) {
  if (subject.length && !config.findCommand(subject[0])) {
    usageError(`help: '${subject[0]}' is not a command`, accepted);
    return;
  }
  await new Help(config, { stripAnsi: !process.stdout.isTTY || !!process.env.NO_COLOR }).showHelp(subject.slice(0, 1));
}

const first = options[0];
if (first === 'help' || first === '-h' || first === '--help') {
  await help(options.slice(1).filter((a) => !a.startsWith('-')));
} else if (first === '-v' || first === '--version') {
  process.stdout.write(`${config.userAgent}\n`);
} else if (first !== undefined && !first.startsWith('-') && !config.findCommand(first)) {
  usageError(`'${first}' is not a command`, accepted);
} else if (first !== undefined && first.startsWith('-')) {
  usageError(
    `${first}: not an option of stor itself`,
    `accepted: --help, --version, or a command first (${commands.join(', ')})`,
  );
} else if (first !== undefined && (options.includes('-h') || options.includes('--help'))) {
  await help([first]);
} else {
  await run(argv, config)
    .then(() => flush())
    .catch((e) => handle(e));
}
