/**
 * Command-line flags for the benchmark and the examples: each flag is declared once with its
 * default and its help line, so `--help` lists them all and anything undeclared is an error.
 */

export class UsageError extends Error {}

export interface FlagSpec {
  name: string;
  /** The value's placeholder (e.g. 'N'); absent for a switch, which takes no value. */
  value?: string;
  /** The default, as shown by --help. */
  default: string;
  help: string;
}

/**
 * Parses `--flag value`, `--flag=value` and switches (`--flag`). Returns the given flags by name
 * (a switch maps to 'true'), or null when --help (or -h) is among them.
 */
export function parseFlags(argv: string[], specs: FlagSpec[]): Map<string, string> | null {
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return null;
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument ${arg} (flags are --flag value pairs and switches; see --help)`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq >= 0 ? eq : undefined);
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new UsageError(`unknown flag --${name} (see --help)`);
    if (spec.value === undefined) {
      if (eq >= 0) throw new UsageError(`--${name} is a switch and takes no value`);
      given.set(name, 'true');
      continue;
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || (eq < 0 && value.startsWith('--'))) throw new UsageError(`--${name} needs a value ${spec.value} (flags are --flag value pairs)`);
    given.set(name, value);
  }
  return given;
}

/** The --help text: a synopsis, then every flag with its value, default and meaning. */
export function usage(synopsis: string[], specs: FlagSpec[]): string {
  const heads = specs.map((s) => `  --${s.name}${s.value ? ` ${s.value}` : ''}`);
  const width = Math.max(...heads.map((h) => h.length)) + 2;
  const lines = specs.flatMap((s, i) => wrap(`${s.help} (default: ${s.default})`, 100 - width).map((l, j) => (j === 0 ? heads[i].padEnd(width) : ' '.repeat(width)) + l));
  return [...synopsis, '', 'flags:', ...lines, `${'  --help'.padEnd(width)}this text`, ''].join('\n');
}

function wrap(text: string, width: number): string[] {
  const lines = [''];
  for (const word of text.split(' ')) {
    const last = lines.length - 1;
    if (lines[last] && lines[last].length + 1 + word.length > width) lines.push(word);
    else lines[last] = lines[last] ? `${lines[last]} ${word}` : word;
  }
  return lines;
}
