//! The data of each chart of a spectra report: one spectrum figure per (layer, site) — the
//! activation eigenvalues with the singular values of the weights that read that input — and
//! one heatmap per [`HeatmapMetric`] over layers × modules.

use super::svg::{Series, heatmap_svg, spectrum_svg};
use crate::calib::SpectraReport;
use crate::calib::report::LayerSpectra;
use crate::model::{Site, Target};

/// Colours of the weight series, in module order.
const WEIGHT_COLORS: [&str; 3] = ["#e63946", "#2a9d8f", "#8338ec"];
/// Colour of the activation eigenvalues.
const ACTIVATION_COLOR: &str = "#1d3557";

/// One line of a spectrum figure.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureSeries {
    /// Legend label.
    pub label: String,
    /// Values, descending.
    pub values: Vec<f64>,
    /// CSS colour.
    pub color: &'static str,
}

/// A spectrum chart: activation eigenvalues and weight singular values of one (layer, site).
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumFigure {
    /// Title.
    pub title: String,
    /// The activation eigenvalues first, then one series per weight reading this site.
    pub series: Vec<FigureSeries>,
    /// The null-space rank r (shaded).
    pub rank: usize,
}

impl SpectrumFigure {
    /// As SVG.
    pub fn svg(&self) -> String {
        let series: Vec<Series> = self
            .series
            .iter()
            .map(|s| Series {
                label: &s.label,
                values: &s.values,
                color: s.color,
            })
            .collect();
        spectrum_svg(&self.title, &series, self.rank)
    }
}

/// The spectrum figure of `site` in the report's `index`-th layer; `None` if it has no such
/// statistic.
pub fn spectrum_figure(report: &SpectraReport, index: usize, site: Site) -> Option<SpectrumFigure> {
    let layer = report.layers.get(index)?;
    let spec = layer.sites.get(&site)?;
    let mut series = vec![FigureSeries {
        label: "activation eigenvalues λ".into(),
        values: spec.eigenvalues.clone(),
        color: ACTIVATION_COLOR,
    }];
    let weights = layer.modules.iter().filter(|(_, m)| m.site == site);
    for (k, (target, m)) in weights.enumerate() {
        series.push(FigureSeries {
            label: format!("{} singular values σ", target.module_name()),
            values: m.singular_values.clone(),
            color: WEIGHT_COLORS[k % WEIGHT_COLORS.len()],
        });
    }
    Some(SpectrumFigure {
        title: format!(
            "layer {} {}: null space = {} smallest",
            layer.layer,
            site.name(),
            report.rank
        ),
        series,
        rank: report.rank,
    })
}

/// What a layer × module heatmap shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatmapMetric {
    /// Effective rank of each module's input activations.
    ActivationEffectiveRank,
    /// Effective rank of each weight.
    WeightEffectiveRank,
    /// Share of the input activations' energy in the null subspace.
    NullActivationEnergy,
    /// Share of the input activations' energy in the top-r subspace.
    TopActivationEnergy,
    /// Share of the weight's energy acting on the null subspace.
    NullWeightEnergy,
}

impl HeatmapMetric {
    /// Every metric, in the order the page lists them.
    pub const ALL: [HeatmapMetric; 5] = [
        HeatmapMetric::ActivationEffectiveRank,
        HeatmapMetric::WeightEffectiveRank,
        HeatmapMetric::NullActivationEnergy,
        HeatmapMetric::TopActivationEnergy,
        HeatmapMetric::NullWeightEnergy,
    ];

    /// Its name in file names and the page's selector (`null_activation_energy`).
    pub fn name(self) -> &'static str {
        match self {
            HeatmapMetric::ActivationEffectiveRank => "activation_effective_rank",
            HeatmapMetric::WeightEffectiveRank => "weight_effective_rank",
            HeatmapMetric::NullActivationEnergy => "null_activation_energy",
            HeatmapMetric::TopActivationEnergy => "top_activation_energy",
            HeatmapMetric::NullWeightEnergy => "null_weight_energy",
        }
    }

    /// The chart's title.
    pub fn title(self) -> &'static str {
        match self {
            HeatmapMetric::ActivationEffectiveRank => "effective rank of the input activations",
            HeatmapMetric::WeightEffectiveRank => "effective rank of the weights",
            HeatmapMetric::NullActivationEnergy => "activation energy in the null subspace",
            HeatmapMetric::TopActivationEnergy => "activation energy in the top-r subspace",
            HeatmapMetric::NullWeightEnergy => "weight energy on the null subspace ‖WP‖²/‖W‖²",
        }
    }

    /// Unit shown with values.
    pub fn unit(self) -> &'static str {
        match self {
            HeatmapMetric::ActivationEffectiveRank | HeatmapMetric::WeightEffectiveRank => "",
            _ => "share",
        }
    }

    /// Parses [`HeatmapMetric::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The value for module `t` of one layer (NaN when the report lacks it).
    pub fn value(self, l: &LayerSpectra, t: Target) -> f64 {
        let module = l.modules.get(&t);
        let site = l.sites.get(&t.site());
        let v = match self {
            HeatmapMetric::ActivationEffectiveRank => site.map(|s| s.summary.effective_rank),
            HeatmapMetric::WeightEffectiveRank => module.map(|m| m.summary.effective_rank),
            HeatmapMetric::NullActivationEnergy => module.map(|m| m.activation_energy_null),
            HeatmapMetric::TopActivationEnergy => module.map(|m| m.activation_energy_top),
            HeatmapMetric::NullWeightEnergy => module.map(|m| m.weight_energy_null),
        };
        v.unwrap_or(f64::NAN)
    }
}

/// A layer × module heatmap.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// What it shows.
    pub metric: HeatmapMetric,
    /// Row labels (`layer 3`).
    pub rows: Vec<String>,
    /// Column labels (`q_proj`).
    pub cols: Vec<String>,
    /// `values[row][col]`.
    pub values: Vec<Vec<f64>>,
}

impl Heatmap {
    /// As SVG.
    pub fn svg(&self) -> String {
        heatmap_svg(
            self.metric.title(),
            &self.rows,
            &self.cols,
            &self.values,
            self.metric.unit(),
        )
    }
}

/// The heatmap of `metric` over the report's layers and targets.
pub fn heatmap(report: &SpectraReport, metric: HeatmapMetric) -> Heatmap {
    Heatmap {
        metric,
        rows: report.layers.iter().map(|l| format!("layer {}", l.layer)).collect(),
        cols: report.targets.iter().map(|t| t.module_name().to_string()).collect(),
        values: report
            .layers
            .iter()
            .map(|l| report.targets.iter().map(|&t| metric.value(l, t)).collect())
            .collect(),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::calib::Normalization;
    use crate::calib::report::{ModuleSpectrum, SiteSpectrum};
    use crate::linalg::spectra::summarize;

    fn report() -> SpectraReport {
        let site = SiteSpectrum {
            eigenvalues: vec![4.0, 2.0, 1.0],
            summary: summarize(&[4.0, 2.0, 1.0]),
            trace: 7.0,
            null_energy: 1.0 / 7.0,
            top_energy: 4.0 / 7.0,
        };
        let module = |null: f64| ModuleSpectrum {
            site: Site::AttnInput,
            shape: [3, 3],
            singular_values: vec![3.0, 1.0, 0.5],
            summary: summarize(&[9.0, 1.0, 0.25]),
            activation_energy_null: null,
            activation_energy_top: 0.5,
            weight_energy_null: 0.1,
            weight_energy_top: 0.7,
        };
        SpectraReport {
            schema: 1,
            rank: 1,
            normalization: Normalization::SignedMax,
            windows: 2,
            tokens: 10,
            targets: vec![Target::Q, Target::K],
            layers: vec![LayerSpectra {
                layer: 0,
                sites: BTreeMap::from([(Site::AttnInput, site)]),
                modules: BTreeMap::from([(Target::Q, module(0.25)), (Target::K, module(0.75))]),
            }],
        }
    }

    #[test]
    fn a_spectrum_figure_holds_the_eigenvalues_then_each_weight_reading_the_site() {
        let r = report();
        let f = spectrum_figure(&r, 0, Site::AttnInput).unwrap();
        assert_eq!(f.series.len(), 3);
        assert_eq!(f.series[0].values, vec![4.0, 2.0, 1.0]);
        assert_eq!(f.series[1].label, "q_proj singular values σ");
        assert_eq!(f.series[2].label, "k_proj singular values σ");
        assert!(f.title.contains("attn_input") && f.title.contains("1 smallest"));
        assert!(f.svg().contains("null r=1"));
        assert!(spectrum_figure(&r, 0, Site::MlpHidden).is_none());
        assert!(spectrum_figure(&r, 5, Site::AttnInput).is_none());
    }

    #[test]
    fn a_heatmap_has_a_row_per_layer_and_a_column_per_target() {
        let h = heatmap(&report(), HeatmapMetric::NullActivationEnergy);
        assert_eq!(h.rows, vec!["layer 0"]);
        assert_eq!(h.cols, vec!["q_proj", "k_proj"]);
        assert_eq!(h.values, vec![vec![0.25, 0.75]]);
        assert!(h.svg().contains("activation energy in the null subspace"));
        for m in HeatmapMetric::ALL {
            assert_eq!(HeatmapMetric::parse(m.name()), Some(m));
        }
    }
}
