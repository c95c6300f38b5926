// The maths worker: loads the app's wasm inside a module worker. The wasm's `main` sees it runs
// in a worker and serves eigendecomposition / SVD / initialisation jobs instead of drawing the page.
import init from './studio.js';
init();
