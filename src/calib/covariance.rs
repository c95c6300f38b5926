//! Streaming activation covariances on the device (algorithm.md §1.2):
//! `C = (1/S) Σ_s X̃_sᵀ X̃_s` per layer input, one window at a time, so memory is one window's
//! activations plus the `d × d` accumulators.
//!
//! Deviation from the reference: it accumulates in fp16; we accumulate in f32 on the device
//! and hand the result to the host as f64 (the spec recommends this; it changes nothing but
//! rounding). On the CPU backend the sums are the host's: faer's symmetric product into the
//! lower triangle, half the products of `XᵀX`.

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};

use super::report::Normalization;
use crate::linalg::Matrix;
use crate::model::weights::read_f32;
use crate::model::{ActivationObserver, LlamaForCausalLM, Projection, Site};

/// The statistic of one layer input.
#[derive(Debug, Clone)]
pub struct SiteStats {
    /// `d × d` second moment `C`, averaged over windows.
    pub covariance: Matrix,
    /// Windows accumulated.
    pub windows: usize,
    /// Tokens seen.
    pub tokens: usize,
    /// `trace(C)`.
    pub trace: f64,
}

/// All statistics of one calibration run.
#[derive(Debug, Clone)]
pub struct Covariances {
    /// Per (layer, site).
    pub sites: BTreeMap<(usize, Site), SiteStats>,
    /// The normalisation used (recorded in every output).
    pub normalization: Normalization,
    /// Windows run.
    pub windows: usize,
    /// Tokens run.
    pub tokens: usize,
}

/// A running `Σ X̃ᵀX̃`: on the device, or on the host's lower triangle (the CPU backend, through
/// faer's symmetric product: `model::cpu_linear`).
// One per layer input, a few hundred per run: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Sum {
    Device(Tensor<2>),
    HostLower { values: Vec<f32>, d: usize },
}

/// Accumulates `X̃ᵀX̃` for the requested sites during forward passes.
pub struct CovarianceAccumulator {
    sites: Vec<Site>,
    normalization: Normalization,
    acc: BTreeMap<(usize, Site), Sum>,
    windows: usize,
    tokens: usize,
}

impl CovarianceAccumulator {
    /// Accumulators for `sites` of every layer.
    pub fn new(sites: Vec<Site>, normalization: Normalization) -> Self {
        Self {
            sites,
            normalization,
            acc: BTreeMap::new(),
            windows: 0,
            tokens: 0,
        }
    }

    /// Runs one window through the model (hidden states only; the output head is skipped).
    pub fn run_window<L: Projection>(&mut self, model: &LlamaForCausalLM<L>, ids: &[u32]) {
        let device = model.device();
        let input = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&x| x as i64).collect(), [1, ids.len()]),
            &device,
        );
        let _ = model.hidden_states(input, None, self);
        self.windows += 1;
        self.tokens += ids.len();
    }

    /// Counts a window of `tokens` tokens run by the caller (who drives the blocks itself and
    /// hands this accumulator to them as their observer).
    pub fn count_window(&mut self, tokens: usize) {
        self.windows += 1;
        self.tokens += tokens;
    }

    /// Reads the accumulators back (async, for the browser) and averages over windows.
    pub async fn finish(self) -> Result<Covariances, String> {
        let mut sites = BTreeMap::new();
        let s = self.windows.max(1) as f64;
        for (key, sum) in self.acc {
            let (d, values) = match sum {
                Sum::Device(t) => (t.dims()[0], read_f32(t).await?),
                Sum::HostLower { mut values, d } => {
                    crate::model::cpu_linear::mirror_lower(&mut values, d);
                    (d, values)
                }
            };
            let covariance = Matrix::from_vec(d, d, values.iter().map(|&v| v as f64 / s).collect())
                .ok_or("covariance of unexpected size")?;
            if !covariance.data.iter().all(|v| v.is_finite()) {
                return Err(format!(
                    "the covariance of layer {} {:?} contains NaN or infinity; the model produced non-finite activations",
                    key.0, key.1
                ));
            }
            let trace = covariance.trace();
            sites.insert(
                key,
                SiteStats {
                    covariance,
                    windows: self.windows,
                    tokens: self.tokens,
                    trace,
                },
            );
        }
        Ok(Covariances {
            sites,
            normalization: self.normalization,
            windows: self.windows,
            tokens: self.tokens,
        })
    }
}

impl ActivationObserver for CovarianceAccumulator {
    fn observe(&mut self, layer: usize, site: Site, x: &Tensor<3>) {
        if !self.sites.contains(&site) {
            return;
        }
        let [b, t, d] = x.dims();
        let flat = x.clone().reshape([b * t, d]);
        if crate::model::cpu_linear::applies(&flat) {
            let values = crate::model::cpu_linear::values(flat);
            let alpha = match self.normalization {
                // 1/|max(X)|², the signed maximum over the whole window (reference behaviour).
                Normalization::SignedMax => {
                    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max).abs();
                    1.0 / (max * max)
                }
                Normalization::None => 1.0,
            };
            let sum = self.acc.entry((layer, site)).or_insert_with(|| Sum::HostLower {
                values: vec![0f32; d * d],
                d,
            });
            if let Sum::HostLower { values: acc, .. } = sum {
                crate::model::cpu_linear::add_gram_lower(acc, &values, (b * t, d), alpha);
            }
            return;
        }
        let mut gram = flat.clone().transpose().matmul(flat.clone());
        if self.normalization == Normalization::SignedMax {
            // |max(X)|², with the signed maximum over the whole window (reference behaviour).
            let max = flat.max().abs();
            gram = gram / max.clone().mul(max).unsqueeze::<2>();
        }
        match self.acc.remove(&(layer, site)) {
            Some(Sum::Device(prev)) => self.acc.insert((layer, site), Sum::Device(prev + gram)),
            _ => self.acc.insert((layer, site), Sum::Device(gram)),
        };
    }
}
