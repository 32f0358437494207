// bench/RESULTS.md holds the full step benchmark and the training run's section: each recording
// rewrites its own part and keeps the other's.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { recordStepReport, recordTrainingReport, sectionOf, TRAINING_HEADING, withSection } from '../../bench/results';

const STEP_1 = '# Benchmark: the KOALA step (full run)\n\nrun one\n\n## Checks\n\n- one\n';
const STEP_2 = '# Benchmark: the KOALA step (full run)\n\nrun two\n\n## Checks\n\n- two\n';
const TRAINING_1 = `${TRAINING_HEADING}\n\ntraining one\n`;
const TRAINING_2 = `${TRAINING_HEADING}\n\ntraining two\n`;

test('sectionOf and withSection find, replace and append a section', () => {
  const text = `# T\n\n## A\n\na\n\n${TRAINING_HEADING}\n\nold\n\n## Z\n\nz\n`;
  expect(sectionOf(text, TRAINING_HEADING)).toBe(`${TRAINING_HEADING}\n\nold\n\n`);
  expect(sectionOf(text, '## Missing')).toBeNull();
  expect(withSection(text, TRAINING_HEADING, TRAINING_2)).toBe(`# T\n\n## A\n\na\n\n${TRAINING_2}\n## Z\n\nz\n`);
  expect(withSection('# T\n\n## A\n\na\n', TRAINING_HEADING, TRAINING_1)).toBe(`# T\n\n## A\n\na\n\n${TRAINING_1}`);
  // The section at the end of the file.
  expect(withSection(`# T\n\n${TRAINING_1}`, TRAINING_HEADING, TRAINING_2)).toBe(`# T\n\n${TRAINING_2}`);
});

test('the step report and the training section each keep the other', () => {
  const path = join(mkdtempSync(join(tmpdir(), 'koala-results-')), 'RESULTS.md');
  recordStepReport(path, STEP_1);
  expect(readFileSync(path, 'utf8')).toBe(STEP_1);
  recordTrainingReport(path, TRAINING_1);
  expect(readFileSync(path, 'utf8')).toBe(`${STEP_1}\n${TRAINING_1}`);
  recordStepReport(path, STEP_2);
  expect(readFileSync(path, 'utf8')).toBe(`${STEP_2}\n${TRAINING_1}`);
  recordTrainingReport(path, TRAINING_2);
  expect(readFileSync(path, 'utf8')).toBe(`${STEP_2}\n${TRAINING_2}`);
  writeFileSync(path, STEP_1);
  recordStepReport(path, STEP_2);
  expect(readFileSync(path, 'utf8')).toBe(STEP_2);
});
