/**
 * Data-parallel KOALA across processes over MPI: every process is a rank owning a slice of the
 * optimizer; the reductions are MPI_Allreduce calls through the example's own thin binding
 * (examples/data-parallel/mpi, built only where mpi.h is found), so the same program runs across
 * machines unchanged. Rank 0 also trains the model in one process, prints the largest relative
 * difference between the two trajectories as its last line, and every rank exits 1 when it exceeds 1e-12.
 *
 *   npx cmake-js compile -d examples/data-parallel/mpi --out build-mpi
 *   mpirun -np 4 node dist/examples/data-parallel/mpi.js [--steps 100] [--variant koala-m|koala-m-lazy|koala-v]
 *   (on a machine with fewer cores: mpirun --oversubscribe -np 4 ...; as root: --allow-run-as-root)
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { PACKAGE_ROOT } from '../../lib/native';
import { initialParams, PARAMS, parseArgs, report, trainSharded, trainSingle, type Collective } from './train';

interface MpiBinding {
  init(): void;
  rank(): number;
  size(): number;
  allReduceSum(buf: Float64Array): void;
  finalize(): void;
}

const BINDING = process.env.KOALA_MPI_ADDON ?? join(PACKAGE_ROOT, 'build-mpi', 'Release', 'koala_mpi.node');

/** The Collective over MPI_COMM_WORLD. Each process holds its own copy of the whole model. */
class MpiCollective implements Collective {
  readonly rank: number;
  readonly size: number;
  private readonly gather = new Float64Array(PARAMS);

  constructor(private readonly mpi: MpiBinding) {
    this.rank = mpi.rank();
    this.size = mpi.size();
  }

  allReduceSum(buf: Float64Array): void {
    this.mpi.allReduceSum(buf);
  }

  /** An all-gather written as a sum: each rank contributes its slice and zeros elsewhere (x + 0 is exact). */
  shareParams(params: Float64Array, begin: number, end: number): void {
    this.gather.fill(0);
    this.gather.set(params.subarray(begin, end), begin);
    this.mpi.allReduceSum(this.gather);
    params.set(this.gather);
  }
}

function main(): number {
  if (!existsSync(BINDING)) {
    console.error(`no MPI binding at ${BINDING}: build it with 'npx cmake-js compile -d examples/data-parallel/mpi --out build-mpi' (needs mpi.h: apt-get install openmpi-bin libopenmpi-dev)`);
    return 2;
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mpi = require(BINDING) as MpiBinding;
  mpi.init();
  try {
    const options = parseArgs(process.argv.slice(2));
    const collective = new MpiCollective(mpi);
    const params = initialParams();
    const sharded = trainSharded(collective, options, params, new Float64Array(PARAMS));
    // Rank 0 judges; the verdict is shared so that every process exits alike.
    const verdict = new Float64Array(1);
    if (collective.rank === 0) {
      verdict[0] = report(`${options.variant}, ${collective.size} MPI processes`, sharded, trainSingle(options), console.log);
    }
    mpi.allReduceSum(verdict);
    return verdict[0];
  } finally {
    mpi.finalize();
  }
}

process.exitCode = main();
