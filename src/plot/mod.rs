//! The studio's charts, built once for both front ends: `figures` turns a spectra report into
//! the data of each chart (which series, which title, which heatmap metric), `svg` draws them.
//! The CLI writes the SVGs to files, the page inlines them. Plain data (no burn).

pub mod figures;
pub mod svg;

pub use figures::{Heatmap, HeatmapMetric, SpectrumFigure, heatmap, spectrum_figure};
pub use svg::{Series, heatmap_svg, line_svg, spectrum_svg};
