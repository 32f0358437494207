/**
 * Progress: a bar redrawn in place on a terminal, plain lines otherwise (a pipe, a CI log), and
 * a silent reporter for tests.
 */
import type { Reporter } from './train';

const WIDTH = 24;

export function silentReporter(): Reporter {
  return { runStart: () => undefined, step: () => undefined, line: () => undefined };
}

/** Plain lines: the epoch summaries only. */
export function lineReporter(out: NodeJS.WritableStream = process.stdout): Reporter {
  return { runStart: () => undefined, step: () => undefined, line: (text) => out.write(`${text}\n`) };
}

/** A bar with the step count, the running loss and the time left, redrawn at most every 100 ms. */
export function barReporter(out: NodeJS.WriteStream = process.stdout): Reporter {
  let title = '';
  let total = 1;
  let started = 0;
  let drawn = 0;
  let meanLoss = 0;
  const clear = () => out.write('\r\x1b[K');
  return {
    runStart(t, steps) {
      title = t;
      total = steps;
      started = performance.now();
      drawn = 0;
      meanLoss = 0;
    },
    step(done, loss) {
      meanLoss += (loss - meanLoss) / done;
      const now = performance.now();
      if (now - drawn < 100 && done < total) return;
      drawn = now;
      const filled = Math.round((WIDTH * done) / total);
      const left = ((now - started) / done) * (total - done) / 1000;
      clear();
      out.write(`${title} [${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}] ${done}/${total} loss ${meanLoss.toFixed(4)} ${left.toFixed(0)} s left`);
    },
    line(text) {
      clear();
      out.write(`${text}\n`);
    },
  };
}
