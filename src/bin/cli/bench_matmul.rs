//! `bench matmul-cpu`: the CPU matrix-multiply candidates on the model's shapes, in one
//! invocation (issue 13: compare before choosing). `x · w` with x `[m, k]` and w `[k, n]`, both
//! row-major f32, into a fresh `[m, n]`; GFLOP/s of the median of 5 runs after one warm-up.
//!
//! - `burn-flex`: what the CPU backend runs today (the `gemm` crate inside, its own threading);
//! - `gemm`: the `gemm` crate called directly, one thread and every thread;
//! - `faer`: faer's matmul, one thread and every thread;
//! - `faer-split`: the output cut into one slab per thread, each slab faer's product on one
//!   thread (`cpu_linear::matmul_split_into`);
//! - `matrixmultiply`: its `sgemm`, one thread.

use std::time::Instant;

use clap::Args;

use super::bench::median;

/// `bench matmul-cpu` options.
#[derive(Args)]
pub struct BenchMatmulCpuArgs {
    /// Rows of the left operand (tokens).
    #[arg(long, default_value_t = 512)]
    rows: usize,
    /// The machine's peak f32 GFLOP/s, to print each candidate's share of it (0: not printed).
    #[arg(long, default_value_t = 0.0)]
    peak_gflops: f64,
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Median seconds of `f` over 5 runs after a warm-up.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// `out = x · w` through the `gemm` crate (row-major: row stride k / n, column stride 1).
fn with_gemm(x: &[f32], w: &[f32], out: &mut [f32], (m, k, n): (usize, usize, usize), par: gemm::Parallelism) {
    // SAFETY: the three slices hold exactly m·k, k·n and m·n values laid out row-major, which is
    // what the strides below describe; `out` is not read (read_dst false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `out = x · w` through matrixmultiply.
fn with_matrixmultiply(x: &[f32], w: &[f32], out: &mut [f32], (m, k, n): (usize, usize, usize)) {
    // SAFETY: as `with_gemm`: row-major slices of exactly the described sizes.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            n as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Runs every candidate on SmolLM2's linear shapes and prints a JSON line per shape.
pub fn matmul_cpu(a: BenchMatmulCpuArgs) -> anyhow::Result<()> {
    use burn::tensor::{Device, Tensor, TensorData};
    let threads = rayon::current_num_threads();
    let device = Device::flex();
    // SmolLM2's linear shapes, the output layer whole and in the loss's 8192-row pieces.
    for (k, n) in [(576, 576), (576, 1536), (1536, 576), (576, 8192), (576, 49152)] {
        let m = a.rows;
        let (x, w) = (values(m * k, 1), values(k * n, 2));
        let mut out = vec![0f32; m * n];
        let dims = (m, k, n);
        let (xt, wt) = (
            Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device),
            Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), &device),
        );
        // The reference for the check below: faer on one thread.
        lora_null::model::cpu_linear::matmul_into(&x, &w, &mut out, dims, faer::Par::Seq);
        let want = out.clone();
        let mut rows = serde_json::Map::new();
        let mut record = |name: &str, seconds: f64, got: &[f32]| {
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
            let gflops = 2.0 * (m * k * n) as f64 / seconds / 1e9;
            let mut entry = serde_json::json!({"seconds": seconds, "gflops": gflops, "max_abs_diff": worst});
            if a.peak_gflops > 0.0 {
                entry["share_of_peak"] = (gflops / a.peak_gflops).into();
            }
            rows.insert(name.into(), entry);
        };
        let s = time(|| {
            let _ = xt.clone().matmul(wt.clone()).into_data();
        });
        let got = xt
            .clone()
            .matmul(wt.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        record("burn-flex", s, &got);
        for (name, par) in [
            ("gemm-1", gemm::Parallelism::None),
            ("gemm-all", gemm::Parallelism::Rayon(threads)),
        ] {
            let s = time(|| with_gemm(&x, &w, &mut out, dims, par));
            record(name, s, &out);
        }
        for (name, par) in [("faer-1", faer::Par::Seq), ("faer-all", faer::Par::rayon(threads))] {
            let s = time(|| lora_null::model::cpu_linear::matmul_into(&x, &w, &mut out, dims, par));
            record(name, s, &out);
        }
        let s = time(|| lora_null::model::cpu_linear::matmul_split_into(&x, &w, &mut out, dims));
        record("faer-split", s, &out);
        let s = time(|| with_matrixmultiply(&x, &w, &mut out, dims));
        record("matrixmultiply-1", s, &out);
        let mut line = serde_json::json!({"bench": "matmul-cpu", "m": m, "k": k, "n": n, "threads": threads});
        line["candidates"] = serde_json::Value::Object(rows);
        println!("{line}");
    }
    Ok(())
}
