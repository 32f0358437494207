/**
 * bench/RESULTS.md holds two records: the full step benchmark (`npm run bench -- --full`, the
 * file's start) and the training run (`npm run bench:training -- --record`, its own section
 * under TRAINING_HEADING). Each tool rewrites its own part and keeps the other's.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export const TRAINING_HEADING = "## In training: the main job's model (`npm run bench:training`)";

/** The section of `text` under `heading` (up to the next "## " heading), or null. */
export function sectionOf(text: string, heading: string): string | null {
  const start = text.indexOf(heading);
  if (start < 0) return null;
  const next = text.indexOf('\n## ', start + heading.length);
  return next < 0 ? text.slice(start) : text.slice(start, next + 1);
}

/** `text` with its section under `heading` replaced by `md` (which starts with that heading), or `md` appended. */
export function withSection(text: string, heading: string, md: string): string {
  const old = sectionOf(text, heading);
  if (old === null) return `${text.trimEnd()}\n\n${md}`;
  const start = text.indexOf(heading);
  const rest = text.slice(start + old.length);
  return `${text.slice(0, start)}${md.trimEnd()}\n${rest.length > 0 ? `\n${rest}` : ''}`;
}

/** Writes the full step benchmark's report to `path`, keeping the training section the file had. */
export function recordStepReport(path: string, markdown: string): void {
  const training = existsSync(path) ? sectionOf(readFileSync(path, 'utf8'), TRAINING_HEADING) : null;
  writeFileSync(path, training === null ? markdown : `${markdown.trimEnd()}\n\n${training.trimEnd()}\n`);
}

/** Puts the training run's report `md` (starting with TRAINING_HEADING) in the file at `path`, in place of its section. */
export function recordTrainingReport(path: string, md: string): void {
  writeFileSync(path, withSection(readFileSync(path, 'utf8'), TRAINING_HEADING, md));
}
