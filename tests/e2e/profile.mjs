// Profiles the page's main thread while the app runs the forgetting check (greedy generation) on
// the tiny model, and prints the functions with the most self time. Diagnostic only (not a test).
// Usage: node tests/e2e/profile.mjs [dist-dir] [probe|train|train-null]
import { join, resolve } from 'node:path';
import { serve, launch } from './harness.mjs';

const root = resolve(new URL('../..', import.meta.url).pathname);
const dist = resolve(process.argv[2] || join(root, 'dist'));
const { server, url } = await serve(dist);
const browser = await launch();
const page = await browser.newPage();
await page.addInitScript(() => {
  window.__longTasks = [];
  new PerformanceObserver(l => { for (const e of l.getEntries()) window.__longTasks.push([Math.round(e.startTime), Math.round(e.duration)]); })
    .observe({ type: 'longtask', buffered: true });
});
await page.goto(url);
await page.click('[data-testid=gpu-button]');
await page.waitForSelector('.gpu', { timeout: 120000 });
const tiny = join(root, 'tests/fixtures/tiny/llama');
await page.setInputFiles('[data-testid=model-input]',
  ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors'].map(f => join(tiny, f)));
await page.waitForFunction(() => /model loaded/.test(document.querySelector('[data-testid=status]')?.textContent || ''), null, { timeout: 120000 });
await page.fill('[data-testid=probe-questions]', '1');
await page.locator('[data-testid=probe-questions]').dispatchEvent('change');
const done = () => page.waitForFunction(() => /forgetting check done/.test(document.querySelector('[data-testid=status]')?.textContent || ''), null, { timeout: 300000 });
await page.click('[data-testid=probe-before]'); // warm-up: kernels compiled
await done();
const cdp = await page.context().newCDPSession(page);
await cdp.send('Profiler.enable');
await cdp.send('Profiler.setSamplingInterval', { interval: 500 });
const mode = process.argv[3] || 'probe';
if (mode.startsWith('train')) {
  await page.setInputFiles('[data-testid=data-input]', join(root, 'tests/fixtures/e2e/train.jsonl'));
  await page.waitForFunction(() => /dataset loaded/.test(document.querySelector('[data-testid=status]')?.textContent || ''), null, { timeout: 60000 });
  const method = mode === 'train-null' ? 'null' : 'lora';
  if (method === 'null') {
    await page.fill('label:has-text("rank r") input', '4');
    await page.fill('label:has-text("windows") input', '4');
    await page.fill('label:has-text("tokens per window") input', '32');
    await page.click('[data-testid=calib-button]');
    await page.waitForFunction(() => /statistics collected|overlap|single window/.test(document.querySelector('[data-testid=status]')?.textContent || ''), null, { timeout: 300000 });
  }
  const section = page.locator('section', { hasText: '4 · Fine-tune' });
  await section.locator('label:has-text("rank") input').fill('4');
  await section.locator('label:has-text("steps") input').fill('2');
  await section.locator('label:has-text("max length") input').fill('256');
  await section.locator('label:has-text("method") select').selectOption(method);
  await section.locator('label:has-text("method") select').dispatchEvent('change');
  await cdp.send('Profiler.start');
  await page.click('[data-testid=train-button]');
  await page.waitForFunction(() => /training finished|failed/.test(document.querySelector('[data-testid=status]')?.textContent || ''), null, { timeout: 300000 });
} else {
  await cdp.send('Profiler.start');
  await page.click('[data-testid=probe-after]');
  await done();
}
const { profile } = await cdp.send('Profiler.stop');
console.log('long tasks [start ms, duration ms]:', JSON.stringify(await page.evaluate(() => window.__longTasks)));
const self = new Map();
const dt = profile.timeDeltas;
const byId = new Map(profile.nodes.map(n => [n.id, n]));
profile.samples.forEach((id, i) => {
  const f = byId.get(id).callFrame;
  const key = `${f.functionName || '(anon)'} ${f.url.split('/').pop()}`;
  self.set(key, (self.get(key) || 0) + (dt[i] || 0));
});
const total = [...self.values()].reduce((a, b) => a + b, 0);
for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 30))
  console.log(`${(100 * v / total).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k.slice(0, 150)}`);
await browser.close();
server.close();
