// A big model in the page (issue 12): loads a GGUF through the file input, collects statistics
// on a few short windows, trains one step, exports, and reports the browser's peak memory (the
// summed resident memory of every chromium process, sampled each second). Not part of the test
// command: a 0.5 B model takes minutes on this machine's software backends.
//
//   node tests/e2e/big.mjs MODEL.gguf [cpu|gpu] [dist-dir]
//   METHOD=lora node tests/e2e/big.mjs ...   skips the statistics (LoRA needs none)
//   UNTIL=load node tests/e2e/big.mjs ...     stops once the model is loaded (the page's status
//                                             line then gives the engine's memory)
//   (scripts/make-big-models.sh makes the random-weight Qwen2.5-0.5B and Llama-3.2-1B shapes)
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { serve, launch } from './harness.mjs';

const [model, device = 'cpu', distArg] = process.argv.slice(2);
if (!model) { console.error('usage: node tests/e2e/big.mjs MODEL.gguf [cpu|gpu] [dist-dir]'); process.exit(2); }
const root = resolve(new URL('../..', import.meta.url).pathname);
const dist = resolve(distArg || join(root, 'dist'));
const { server, url } = await serve(dist);
const t0 = Date.now();
const step = (msg) => console.log(`big: ${msg} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

// Peak of the summed RSS of all chromium processes, and each kind of process's own peak (the
// renderer runs the page and its workers; the GPU process holds SwiftShader's device memory).
let peakKb = 0;
const peakByType = {};
const sample = () => {
  try {
    const out = execFileSync('ps', ['-C', 'chromium', '-o', 'rss=,args='], { encoding: 'utf8' });
    const now = {};
    for (const line of out.split('\n')) {
      const m = /^\s*(\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const type = (/--type=([\w-]+)/.exec(m[2]) || [, 'browser'])[1];
      now[type] = (now[type] || 0) + Number(m[1]);
    }
    peakKb = Math.max(peakKb, Object.values(now).reduce((a, b) => a + b, 0));
    for (const [type, kb] of Object.entries(now)) peakByType[type] = Math.max(peakByType[type] || 0, kb);
  } catch { /* no chromium process at this instant */ }
};
const byType = () => Object.entries(peakByType).map(([t, kb]) => `${t} ${(kb / 1048576).toFixed(2)}`).join(', ');
const sampler = setInterval(sample, 1000);

const browser = await launch();
try {
  const page = await browser.newPage({ acceptDownloads: true, viewport: { width: 1400, height: 1000 } });
  let pageError = null;
  page.on('pageerror', e => { pageError = e.message; });
  page.on('console', m => { if (m.type() === 'error') console.error(`big: page console: ${m.text().slice(0, 2000)}`); });
  // Polls the status line, failing on the page's error box or an uncaught error (a panic in a
  // worker surfaces as one); prints each new phase (the status line, or a progress bar's label)
  // with the time it began, and progress bars at each further quarter.
  let phase = '';
  let quarter = -1;
  const logPhase = async () => {
    const text = ((await page.textContent('[data-testid=status]')) || '').trim();
    const bar = await page.$('.progress');
    const label = bar ? ((await bar.textContent()) || '').trim() : '';
    const value = bar ? Number(await bar.$eval('progress', p => p.value)) : 0;
    const now = label ? `${label} (progress)` : text.replace(/^step \d+.*/, 'training steps');
    if (now !== phase) { phase = now; quarter = -1; step(`phase: ${now}`); }
    if (label && Math.floor(value * 4) > quarter) {
      quarter = Math.floor(value * 4);
      if (quarter > 0) step(`  ${label}: ${Math.round(value * 100)}%`);
    }
    return text;
  };
  const waitStatus = async (re, timeout) => {
    const end = Date.now() + timeout;
    for (;;) {
      if (pageError) throw new Error(`uncaught error in the page: ${pageError}`);
      const err = await page.$('[data-testid=error]');
      if (err) throw new Error(`the page reports: ${await err.textContent()}`);
      if (re.test(await logPhase())) return;
      if (Date.now() > end) throw new Error(`timed out waiting for ${re}`);
      await page.waitForTimeout(1000);
    }
  };
  await page.goto(url);
  await page.click(`[data-testid=${device}-button]`);
  await page.waitForSelector('.gpu', { timeout: 120000 });
  step(`device: ${await page.textContent('.gpu')}`);

  await page.setInputFiles('[data-testid=model-input]', resolve(model));
  await waitStatus(/model loaded/, 1800000);
  step(`loaded: ${(await page.textContent('[data-testid=model-summary]')).replace(/\s+/g, ' ')}`);
  step(`status: ${(await page.textContent('[data-testid=status]')).trim()}`);
  if (process.env.UNTIL !== 'load') {
    await page.setInputFiles('[data-testid=data-input]', join(root, 'tests/fixtures/e2e/train.jsonl'));
    await waitStatus(/dataset loaded/, 60000);

    const method = process.env.METHOD || 'null';
    if (method !== 'lora') {
      const fill = async (label, value) => page.fill(`label:has-text("${label}") input`, value);
      await fill('rank r', '16');
      await fill('windows', '2');
      await fill('tokens per window', '32');
      await page.click('[data-testid=calib-button]');
      await waitStatus(/statistics collected|overlap|single window|block by block/, 3600000);
      step(`statistics: ${(await page.textContent('[data-testid=status]')).trim()}`);
    }
    await page.selectOption('[data-testid=method-select]', method);

    const section = page.locator('section', { hasText: '4 · Fine-tune' });
    await section.locator('label:has-text("rank") input').fill('16');
    await section.locator('label:has-text("steps") input').fill('1');
    await section.locator('label:has-text("max length") input').fill('256');
    await section.locator('label:has-text("batch") input').fill('1').catch(() => {});
    await page.click('[data-testid=train-button]');
    await waitStatus(/training finished/, 3600000);
    step(`trained one step: ${(await page.textContent('[data-testid=status]')).trim()}`);

    const downloads = [];
    page.on('download', d => downloads.push(d));
    await page.click('[data-testid=export-button]');
    await waitStatus(/adapter exported/, 1800000);
    await page.waitForTimeout(1000);
    const names = [];
    for (const d of downloads) names.push(`${d.suggestedFilename()} (${readFileSync(await d.path()).length} bytes)`);
    step(`exported: ${names.join(', ')}`);
  }
  sample();
  console.log(`big: passed; browser peak RSS ${(peakKb / 1048576).toFixed(2)} GiB (all chromium processes; each kind's own peak, GiB: ${byType()})`);
} catch (e) {
  sample();
  console.error(`big: FAILED: ${e.message}; browser peak RSS so far ${(peakKb / 1048576).toFixed(2)} GiB (${byType()})`);
  process.exitCode = 1;
} finally {
  clearInterval(sampler);
  await browser.close();
  server.close();
}
