// Which JPEG encoder settings pay at thumbnail size: libjpeg-turbo's (what resizeq and sharp's
// default use) against mozjpeg's trellis quantisation, progressive scans and quantisation tables.
// sharp's prebuilt libvips links mozjpeg, so both are reached through one library: every photo
// is resized to 500 px once (sharp, Lanczos), and the same pixels are encoded with each setting.
// Used by `scripts/bench --jpeg-encoders`, which scores the files (encoders.py).
//
//   node scripts/bench.d/jpeg-encoders.mjs --out DIR FILE...
// writes DIR/<setting>/<file name>.500.jpg and prints one JSON line per encode.
process.env.UV_THREADPOOL_SIZE = '1';
process.env.VIPS_CONCURRENCY ??= '1';

const { default: sharp } = await import('sharp');
const { mkdir, writeFile } = await import('node:fs/promises');
const { basename, join } = await import('node:path');
const { performance } = await import('node:perf_hooks');
sharp.concurrency(1);
sharp.cache(false);

const turbo = { chromaSubsampling: '4:2:0', optimiseCoding: true };
const trellis = { ...turbo, trellisQuantisation: true, overshootDeringing: true, progressive: true };
// label → sharp jpeg() options. `moz` is mozjpeg's own default (cjpeg): trellis, progressive
// with optimised scans, its quantisation table 3.
const SETTINGS = {
  'turbo-q80': { quality: 80, ...turbo },
  'turbo-q78': { quality: 78, ...turbo },
  'turbo-q75': { quality: 75, ...turbo },
  'trellis-q80': { quality: 80, ...trellis, quantisationTable: 0 },
  'trellis-q82': { quality: 82, ...trellis, quantisationTable: 0 },
  'moz-q80': { quality: 80, mozjpeg: true },
  'moz-q83': { quality: 83, mozjpeg: true },
  'moz-q85': { quality: 85, mozjpeg: true },
};

const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
if (outAt < 0 || !args[outAt + 1]) {
  process.stderr.write('usage: node jpeg-encoders.mjs --out DIR FILE...\n');
  process.exit(2);
}
const out = args[outAt + 1];
const files = args.filter((_, i) => i !== outAt && i !== outAt + 1);
for (const label of Object.keys(SETTINGS)) await mkdir(join(out, label), { recursive: true });

for (const file of files) {
  let raw;
  try {
    raw = await sharp(file).rotate().resize(500).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    // sharp's prebuilt libvips has no HEVC decoder: the HEIC photos are left out here.
    console.log(JSON.stringify({ file: basename(file), skipped: e.message.split('\n')[0] }));
    continue;
  }
  for (const [label, options] of Object.entries(SETTINGS)) {
    const input = () => sharp(raw.data, { raw: raw.info });
    await input().jpeg(options).toBuffer(); // warm-up: the timed encode below is the second
    const t0 = performance.now();
    const jpeg = await input().jpeg(options).toBuffer();
    const ms = performance.now() - t0;
    await writeFile(join(out, label, `${basename(file)}.500.jpg`), jpeg);
    console.log(JSON.stringify({ file: basename(file), label, bytes: jpeg.length, ms }));
  }
}
