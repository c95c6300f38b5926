// The app's workers: loads the engine's wasm (studio-engine, with burn) inside a module worker.
// Its `main` reads the worker's name: "engine" runs the model, statistics and training for the
// page; "maths" serves eigendecomposition / SVD / initialisation jobs for the engine.
import init from './studio-engine.js';

// Messages that arrive while the wasm is still loading wait here, then go to the handler the
// wasm installed. A failed start is rethrown outside the promise so the page sees an `error`.
const early = [];
self.onmessage = (e) => early.push(e);
init().then(
  () => { for (const e of early.splice(0)) self.onmessage(e); },
  (err) => setTimeout(() => { throw new Error(`the app's wasm did not start in a worker: ${err}`); }),
);
