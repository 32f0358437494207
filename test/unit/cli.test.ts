// The command lines of the main job and the benchmark (bench/args.ts): --help lists every flag with
// its default, an unknown flag or a missing value is an error, switches take no value.
import { parseFlags, usage, UsageError, type FlagSpec } from '../../bench/args';
import { helpText, parseArgs } from '../../examples/mnist/main';
import { DEFAULTS } from '../../examples/mnist/train';

const SPECS: FlagSpec[] = [
  { name: 'out', value: 'DIR', default: 'results', help: 'where it goes' },
  { name: 'verbose', default: 'off', help: 'say more' },
];

test('flags: --flag value, --flag=value and switches; --help wins', () => {
  expect([...parseFlags(['--out', 'a', '--verbose'], SPECS)!]).toEqual([['out', 'a'], ['verbose', 'true']]);
  expect([...parseFlags(['--out=b'], SPECS)!]).toEqual([['out', 'b']]);
  expect(parseFlags([], SPECS)!.size).toBe(0);
  expect(parseFlags(['--out', 'a', '--help'], SPECS)).toBeNull();
  expect(parseFlags(['-h'], SPECS)).toBeNull();
});

test('flags: an unknown flag, a missing value, a value to a switch, a stray word are usage errors', () => {
  expect(() => parseFlags(['--fulll'], SPECS)).toThrow(new UsageError('unknown flag --fulll (see --help)'));
  expect(() => parseFlags(['--out'], SPECS)).toThrow(/--out needs a value DIR/);
  expect(() => parseFlags(['--out', '--verbose'], SPECS)).toThrow(/--out needs a value DIR/);
  expect(() => parseFlags(['--verbose=1'], SPECS)).toThrow(/--verbose is a switch/);
  expect(() => parseFlags(['quick'], SPECS)).toThrow(/unexpected argument quick/);
});

test('usage lists every flag, its value and its default, and --help', () => {
  const text = usage(['usage: x [flags]'], SPECS);
  expect(text).toMatch(/^ {2}--out DIR +where it goes \(default: results\)$/m);
  expect(text).toMatch(/^ {2}--verbose +say more \(default: off\)$/m);
  expect(text).toMatch(/^ {2}--help +this text$/m);
});

test('the main job: --help, and every flag in its help with the default the job uses', () => {
  expect(parseArgs(['--epochs', '2', '--help']).help).toBe(true);
  const { config, help } = parseArgs(['--epochs=2']);
  expect(help).toBe(false);
  expect(config.epochs).toBe(2);
  const text = helpText().replace(/\s+/g, ' ').trim();
  for (const [flag, value] of [
    ['epochs', DEFAULTS.epochs],
    ['seeds', DEFAULTS.seeds.join(',')],
    ['batch', DEFAULTS.batch],
    ['model', DEFAULTS.model],
    ['optimizers', DEFAULTS.optimizers.join(',')],
    ['schedule', DEFAULTS.schedule],
    ['gamma', DEFAULTS.gamma],
    ['step-epochs', DEFAULTS.stepEpochs],
    ['warmup-epochs', DEFAULTS.warmupEpochs],
    ['subset', DEFAULTS.subset],
    ['backend', DEFAULTS.backend],
    ['out', 'results'],
    ['sweep', 'none'],
  ]) {
    const entry = text.split(' --').find((e) => e.startsWith(`${flag} `));
    expect(entry).toMatch(new RegExp(`\\(default: ${String(value).replace(/[.]/g, '\\.')}\\)$`));
  }
  expect(() => parseArgs(['--fulll'])).toThrow(/unknown flag --fulll/);
});
