// Shared by e2e.mjs and profile.mjs: serves a built app folder on a free local port and
// launches Debian's chromium with WebGPU (SwiftShader here) through playwright-core.
import { createServer } from 'node:http';
import { readFileSync, existsSync, statSync } from 'node:fs';
import { join, extname } from 'node:path';
import { chromium } from 'playwright-core';

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };

/** Serves `dist`; resolves to { server, url }. */
export async function serve(dist) {
  const server = createServer((req, res) => {
    let path = join(dist, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (existsSync(path) && statSync(path).isDirectory()) path = join(path, 'index.html');
    if (!existsSync(path)) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': types[extname(path)] || 'application/octet-stream' });
    res.end(readFileSync(path));
  });
  await new Promise(r => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

/** Headless chromium with WebGPU enabled. */
export function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true, ignoreDefaultArgs: ['--enable-unsafe-swiftshader'],
    args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--disable-quic', '--enable-unsafe-webgpu'],
  });
}
