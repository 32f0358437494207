/**
 * Data-parallel KOALA over worker threads in one process: the parameters and gradients live in
 * SharedArrayBuffers, every worker is a rank owning a slice of the optimizer, and the reduction is
 * written with Atomics (a barrier, then every rank adds the ranks' rows in rank order, so every
 * rank gets the same bits). Prints the largest relative difference from a single-process run as its
 * last line and exits 1 when it exceeds 1e-12.
 *
 *   node dist/examples/data-parallel/threads.js [--ranks 3] [--steps 100] [--variant koala-m|koala-m-lazy|koala-v]
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

import { initialParams, PARAMS, parseArgs, report, trainSharded, trainSingle, type Collective, type RunOptions, type Trajectory } from './train';

/** The longest buffer a rank reduces: the gradient and two loss sums. */
const ROW = PARAMS + 2;

interface Shared {
  params: SharedArrayBuffer;
  grads: SharedArrayBuffer;
  /** One row of ROW doubles per rank: what each rank contributes to a reduction. */
  rows: SharedArrayBuffer;
  /** [arrived, generation]: the barrier. */
  control: SharedArrayBuffer;
}

/** The Collective over shared memory. */
class SharedMemoryCollective implements Collective {
  private readonly rows: Float64Array[];
  private readonly control: Int32Array;

  constructor(readonly rank: number, readonly size: number, shared: Shared) {
    this.rows = Array.from({ length: size }, (_, r) => new Float64Array(shared.rows, r * ROW * 8, ROW));
    this.control = new Int32Array(shared.control);
  }

  /** Waits until every rank has arrived. The Atomics calls order every plain write before them before every read after. */
  barrier(): void {
    const generation = Atomics.load(this.control, 1);
    if (Atomics.add(this.control, 0, 1) === this.size - 1) {
      Atomics.store(this.control, 0, 0);
      Atomics.add(this.control, 1, 1);
      Atomics.notify(this.control, 1);
    } else {
      while (Atomics.load(this.control, 1) === generation) Atomics.wait(this.control, 1, generation);
    }
  }

  allReduceSum(buf: Float64Array): void {
    this.rows[this.rank].set(buf);
    this.barrier();
    buf.set(this.rows[0].subarray(0, buf.length));
    for (let r = 1; r < this.size; r++) {
      const row = this.rows[r];
      for (let i = 0; i < buf.length; i++) buf[i] += row[i];
    }
    this.barrier(); // nobody overwrites a row before every rank has read it
  }

  /** The parameters are shared memory: each rank's slice is every rank's once all have arrived. */
  shareParams(): void {
    this.barrier();
  }
}

interface Job {
  rank: number;
  size: number;
  shared: Shared;
  options: RunOptions;
}

function runRank({ rank, size, shared, options }: Job): Trajectory {
  const collective = new SharedMemoryCollective(rank, size, shared);
  return trainSharded(collective, options, new Float64Array(shared.params), new Float64Array(shared.grads));
}

async function main(): Promise<number> {
  const { ranks, ...options } = parseArgs(process.argv.slice(2));
  if (ranks < 2 || ranks > 4) throw new Error(`--ranks must be 2, 3 or 4 (worker threads in one process), got ${ranks}`);
  const shared: Shared = {
    params: new SharedArrayBuffer(PARAMS * 8),
    grads: new SharedArrayBuffer(PARAMS * 8),
    rows: new SharedArrayBuffer(ranks * ROW * 8),
    control: new SharedArrayBuffer(8),
  };
  new Float64Array(shared.params).set(initialParams());
  const results = Array.from({ length: ranks }, (_, rank) => {
    const worker = new Worker(__filename, { workerData: { rank, size: ranks, shared, options } satisfies Job });
    return new Promise<Trajectory>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => code !== 0 && reject(new Error(`rank ${rank} exited with ${code}`)));
    });
  });
  const [rank0] = await Promise.all(results);
  const single = trainSingle(options);
  return report(`${options.variant}, ${ranks} worker threads`, rank0, single, console.log);
}

if (isMainThread) {
  main().then(
    (code) => (process.exitCode = code),
    (e: Error) => {
      console.error(e.stack ?? e.message);
      process.exitCode = 2;
    },
  );
} else {
  parentPort!.postMessage(runRank(workerData as Job));
}
