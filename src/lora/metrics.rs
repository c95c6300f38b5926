//! How an adapter relates to the knowledge activations: how much of their energy its down
//! projection reads at initialisation, and, after training, how much its weight update
//! `ΔW = s·(BA − B₀A₀)` disturbs the outputs on them and how much of it lies in their top
//! directions. The forgetting experiment reports these; the maths is in `linalg::spectra`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::export::ExportError;
use super::init::InitRecord;
use super::linear::LoraModel;
use crate::io::HostTensor;
use crate::linalg::Matrix;
use crate::linalg::decompose::{Eigh, qr};
use crate::linalg::init::top_basis;
use crate::linalg::spectra::{activation_energy, output_disturbance, weight_energy};
use crate::model::Target;
use crate::model::weights::read_matrix;

/// What a trained update does to the knowledge activations, for one module or on average.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct UpdateMetrics {
    /// `tr(ΔW C ΔWᵀ) / tr(W C Wᵀ)`: the output energy the update adds on the calibration
    /// activations, relative to the original weight's (0: silent on them).
    pub disturbance: f64,
    /// `‖ΔW P_top‖² / ‖ΔW‖²` for the calibration's top-r eigen-directions P_top.
    pub top_share: f64,
}

/// The metrics of one module: update `delta`, original weight `w`, input covariance `c` with
/// eigendecomposition `e`, subspace rank `rank`.
pub fn update_metrics(delta: &Matrix, w: &Matrix, c: &Matrix, e: &Eigh, rank: usize) -> UpdateMetrics {
    UpdateMetrics {
        disturbance: output_disturbance(delta, w, c),
        top_share: weight_energy(delta, &top_basis(e, rank.min(e.values.len()))),
    }
}

/// The mean over modules.
pub fn mean_metrics(per_module: &[UpdateMetrics]) -> UpdateMetrics {
    let n = per_module.len().max(1) as f64;
    UpdateMetrics {
        disturbance: per_module.iter().map(|m| m.disturbance).sum::<f64>() / n,
        top_share: per_module.iter().map(|m| m.top_share).sum::<f64>() / n,
    }
}

fn matrix(t: &HostTensor) -> Matrix {
    Matrix::from_f32(t.shape[0], t.shape[1], &t.data).expect("invariant: a 2-D factor")
}

/// For one adapted module: the update on the ORIGINAL base, `ΔW = s·(BA − B₀A₀)`, and the
/// original weight (the current base plus `s·B₀A₀` when the method moved it into the adapter),
/// both `[out, in]`, in f64.
pub async fn update_and_original(
    model: &LoraModel,
    init: &InitRecord,
    layer: usize,
    target: Target,
    changes_base: bool,
) -> Result<Option<(Matrix, Matrix)>, ExportError> {
    let Some(lin) = model.linear(layer, target) else {
        return Ok(None);
    };
    let Some(adapter) = &lin.adapter else {
        return Ok(None);
    };
    let read = |t| async { read_matrix(t).await.map_err(ExportError::Device) };
    let (a, b) = (read(adapter.lora_a.val()).await?, read(adapter.lora_b.val()).await?);
    let mut delta = b.matmul(&a);
    let mut w = read(lin.base.weight_out_in()).await?;
    if let Some((a0, b0)) = init.factors.get(&(layer, target)) {
        let initial = matrix(b0).matmul(&matrix(a0));
        delta = delta.sub(&initial);
        if changes_base {
            w = w.add(&initial.scale(adapter.scale));
        }
    }
    Ok(Some((delta.scale(adapter.scale), w)))
}

/// For each adapted module, `trace(QᵀCQ)/trace(C)` with Q an orthonormal basis of the rows of
/// its initial down projection A₀: the share of the calibration activations' energy the adapter
/// reads at initialisation (tiny for the null-space methods, large for PiSSA).
pub fn input_energy(
    init: &InitRecord,
    covariance: &dyn Fn(usize, Target) -> Option<Matrix>,
) -> BTreeMap<(usize, Target), f64> {
    let mut out = BTreeMap::new();
    for (&(layer, target), (a, _)) in &init.factors {
        let Some(c) = covariance(layer, target) else {
            continue;
        };
        if let Ok((q, _)) = qr(&matrix(a).t()) {
            out.insert((layer, target), activation_energy(&c, &q));
        }
    }
    out
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::linalg::decompose::eigh;

    /// C = diag(9, 4, 1, 0): the last direction carries no activation energy at all.
    fn covariance() -> Matrix {
        Matrix::from_fn(4, 4, |i, j| if i == j { [9.0, 4.0, 1.0, 0.0][i] } else { 0.0 })
    }

    fn column_update(col: usize) -> Matrix {
        Matrix::from_fn(3, 4, |i, j| if j == col { 1.0 + i as f64 } else { 0.0 })
    }

    #[test]
    fn an_update_in_the_null_space_is_silent_and_one_in_the_top_direction_is_not() {
        let c = covariance();
        let e = eigh(&c).unwrap();
        let w = Matrix::from_fn(3, 4, |i, j| (i + j) as f64 + 1.0);
        let null = update_metrics(&column_update(3), &w, &c, &e, 1);
        assert!(
            null.disturbance.abs() < 1e-12 && null.top_share.abs() < 1e-12,
            "{null:?}"
        );
        let top = update_metrics(&column_update(0), &w, &c, &e, 1);
        assert!((top.top_share - 1.0).abs() < 1e-12, "{top:?}");
        assert!(top.disturbance > 0.1);
        // ΔW = W disturbs the outputs by exactly their own energy.
        let same = update_metrics(&w, &w, &c, &e, 2);
        assert!((same.disturbance - 1.0).abs() < 1e-12);
        let mean = mean_metrics(&[null, top]);
        assert!((mean.top_share - 0.5).abs() < 1e-12);
    }

    #[test]
    fn input_energy_is_the_activation_share_the_down_projection_reads() {
        let c = covariance();
        let mut init = InitRecord::default();
        // A₀ reads only the second direction (eigenvalue 4 of a total 14).
        let a = HostTensor::new(vec![0.0, 2.0, 0.0, 0.0], vec![1, 4]);
        init.factors
            .insert((0, Target::Q), (a, HostTensor::new(vec![0.0; 3], vec![3, 1])));
        let got = input_energy(&init, &|_, _| Some(c.clone()));
        assert!((got[&(0, Target::Q)] - 4.0 / 14.0).abs() < 1e-12);
    }
}
