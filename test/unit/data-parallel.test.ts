// The data-parallel example (examples/data-parallel), run as users run it: the compiled program
// (dist/, built by npm ci or tsc) over worker threads, and under mpirun where Open MPI and the
// example's MPI binding (build-mpi/, npx cmake-js compile -d examples/data-parallel/mpi --out build-mpi)
// are present (with CI=true they must be). Each must exit 0 and print a difference of at most 1e-12
// as its last line.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');
const EXAMPLE = join(ROOT, 'dist', 'examples', 'data-parallel');
const MPI_BINDING = join(ROOT, 'build-mpi', 'Release', 'koala_mpi.node');
const mpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
const mpiMissing = mpirun.status !== 0 ? 'mpirun is not installed' : !existsSync(MPI_BINDING) ? `no MPI binding at ${MPI_BINDING}` : '';

function lastLine(out: string): string {
  return out.trim().split('\n').pop() ?? '';
}

function difference(line: string): number {
  const m = /^largest relative difference: (\S+)$/.exec(line);
  if (!m) throw new Error(`unexpected last line: ${line}`);
  return Number(m[1]);
}

test('the compiled example is there (npm ci and tsc build it)', () => {
  expect(existsSync(join(EXAMPLE, 'threads.js'))).toBe(true);
});

test.each([
  [2, 'koala-m'],
  [3, 'koala-m-lazy'],
  [4, 'koala-v'],
])('%i worker threads, %s: exit 0 and at most 1e-12', (ranks, variant) => {
  const run = spawnSync(process.execPath, [join(EXAMPLE, 'threads.js'), '--ranks', String(ranks), '--variant', variant], { encoding: 'utf8' });
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  expect(difference(lastLine(run.stdout))).toBeLessThanOrEqual(1e-12);
});

// CI must prove that the mpirun runs ran (.ci/run installs Open MPI and builds the binding): with
// CI=true a missing mpirun or binding fails them instead of skipping them.
const mpiRequired = process.env.CI === 'true';
if (mpiMissing && !mpiRequired) console.log(`mpirun runs skipped: ${mpiMissing}`);

(mpiMissing && !mpiRequired ? test.skip : test).each([2, 4])('mpirun -np %i: exit 0 and at most 1e-12', (np) => {
  if (mpiMissing) throw new Error(`CI=true, but the mpirun runs cannot run: ${mpiMissing} (.ci/run installs Open MPI and builds build-mpi/)`);
  const args = ['--oversubscribe', ...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []), '-np', String(np), process.execPath, join(EXAMPLE, 'mpi.js')];
  const run = spawnSync('mpirun', args, { encoding: 'utf8' });
  expect(run.status).toBe(0);
  expect(difference(lastLine(run.stdout))).toBeLessThanOrEqual(1e-12);
});
