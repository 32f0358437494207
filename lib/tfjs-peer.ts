/**
 * `koala-optim/tfjs` needs @tensorflow/tfjs-core, an optional peer dependency. lib/tfjs.ts imports
 * this module before it, so that a missing peer is a coded error naming what to install, not
 * a bare MODULE_NOT_FOUND.
 */
import { fail } from './errors';

try {
  require.resolve('@tensorflow/tfjs-core');
} catch {
  fail('ERR_KOALA_PEER_MISSING', 'koala-optim/tfjs needs @tensorflow/tfjs-core, an optional peer dependency: npm install @tensorflow/tfjs-core (4.22 or a later 4.x)');
}
