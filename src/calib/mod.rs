//! Calibration: token windows from a corpus, activation covariances of every adapted layer
//! input (accumulated on the device), their eigendecompositions, and the spectra report.

pub mod covariance;
pub mod eigh_cache;
pub mod spectra;
pub mod windows;

pub use covariance::{CovarianceAccumulator, Covariances, Normalization, SiteStats};
pub use eigh_cache::EighCache;
pub use spectra::{SpectraReport, analyze};
pub use windows::{Windows, draw_windows};

use crate::linalg::decompose::DecomposeError;
use crate::model::Site;

/// Errors computing statistics and spectra.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    /// A statistic for a site is missing.
    #[error("no activation statistics for layer {0} {1:?}; run calibration with a target that reads it")]
    MissingStats(usize, Site),
    /// A decomposition failed.
    #[error("layer {layer} {site:?}: {source}")]
    Decompose {
        /// Layer.
        layer: usize,
        /// Input site.
        site: Site,
        /// Cause.
        source: DecomposeError,
    },
    /// A weight's SVD failed.
    #[error("layer {layer} {module}: {source}")]
    Weight {
        /// Layer.
        layer: usize,
        /// Module name.
        module: &'static str,
        /// Cause.
        source: DecomposeError,
    },
    /// Reading from the device failed.
    #[error("reading from the device failed: {0}; the GPU may have been lost or run out of memory")]
    Device(String),
    /// The calibration produced nothing usable.
    #[error("{0}")]
    Data(String),
    /// The user cancelled the calibration.
    #[error("calibration cancelled")]
    Cancelled,
}
