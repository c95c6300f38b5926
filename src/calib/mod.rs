//! Calibration: token windows from a corpus, activation covariances of every adapted layer
//! input (accumulated on the device), and the spectra report built from their decompositions.
//! `report` is plain data (the page reads it); the rest needs burn.

pub mod report;

#[cfg(feature = "engine")]
pub mod covariance;
#[cfg(feature = "engine")]
pub mod windows;

pub use report::{Normalization, SpectraReport};

#[cfg(feature = "engine")]
pub use covariance::{CovarianceAccumulator, Covariances, SiteStats};
#[cfg(feature = "engine")]
pub use windows::{Windows, draw_windows};

/// Errors collecting statistics.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    /// A statistic for a site is missing.
    #[error("no activation statistics for layer {0} {1:?}; collect statistics for a target that reads it")]
    MissingStats(usize, crate::model::Site),
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
