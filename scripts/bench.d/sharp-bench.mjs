#!/usr/bin/env node
// Reference implementation of the AWS Lambda that resizeq replaces (sharp + heic-convert),
// with the same command-line contract as resizeq's `cargo bench --bench pipeline`:
//
//   node scripts/bench.d/sharp-bench.mjs --rounds N --out DIR FILE...
//
// For every round and every FILE (in the order given): read the file into memory (untimed), then
// time decode + both variants (80 and 500 px wide, JPEG q80) from bytes in memory to encoded
// buffers in memory; a HEIC is first converted to JPEG by heic-convert (quality 1), inside the
// timing. Prints one JSON line per file per round on stdout:
//   {"file":"jpg01_painting-colors.jpg","round":0,"ms":12.3}
// and writes the 500-wide output to DIR/<file name>.500.jpg (untimed).
// Runs on one core: UV_THREADPOOL_SIZE=1, sharp.concurrency(1), sharp.cache(false).

import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';

// Must be set before libuv's threadpool starts, i.e. before sharp is loaded (hence the dynamic
// imports below: static imports would be evaluated before this line).
process.env.UV_THREADPOOL_SIZE = '1';
process.env.VIPS_CONCURRENCY ??= '1';

const WIDTHS = [80, 500];

function usage(msg) {
  if (msg) process.stderr.write(`sharp-bench: ${msg}\n`);
  process.stderr.write('usage: node sharp-bench.mjs [--rounds N] --out DIR FILE...\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { rounds: 1, out: null, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--rounds') {
      opts.rounds = Number.parseInt(argv[++i], 10);
      if (!Number.isInteger(opts.rounds) || opts.rounds < 1) usage('--rounds needs a positive integer');
    } else if (a === '--out') {
      opts.out = argv[++i];
      if (!opts.out) usage('--out needs a directory');
    } else if (a === '--bench') {
      // what `cargo bench` appends; accepted for symmetry with the Rust bench
    } else if (a === '-h' || a === '--help') {
      usage();
    } else if (a.startsWith('--')) {
      usage(`unknown option ${a}`);
    } else {
      opts.files.push(a);
    }
  }
  if (!opts.out) usage('--out DIR is required');
  if (opts.files.length === 0) usage('no input files');
  return opts;
}

function isHeic(file) {
  return /\.(heic|heif)$/i.test(file);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { default: sharp } = await import('sharp');
  const require = createRequire(import.meta.url);
  const heicConvert = require('heic-convert');

  sharp.concurrency(1);
  sharp.cache(false);

  // The Lambda's pipeline, from bytes in memory to encoded buffers in memory.
  async function pipeline(name, input) {
    let buf = input;
    if (isHeic(name)) {
      buf = Buffer.from(await heicConvert({ buffer: input, format: 'JPEG', quality: 1 }));
    }
    const outputs = {};
    for (const w of WIDTHS) {
      outputs[w] = await sharp(buf)
        .resize(w, null, { fit: 'contain' })
        .jpeg({ quality: 80 })
        .withMetadata()
        .toBuffer();
    }
    return outputs;
  }

  await mkdir(opts.out, { recursive: true });
  for (let round = 0; round < opts.rounds; round++) {
    for (const file of opts.files) {
      const name = basename(file);
      const input = await readFile(file);
      const t0 = performance.now();
      const outputs = await pipeline(name, input);
      const ms = performance.now() - t0;
      process.stdout.write(`${JSON.stringify({ file: name, round, ms: Math.round(ms * 1000) / 1000 })}\n`);
      await writeFile(join(opts.out, `${name}.500.jpg`), outputs[500]);
    }
  }
}

main().catch((err) => {
  process.stderr.write(`sharp-bench: ${err?.stack ?? err}\n`);
  process.exit(1);
});
