//! Eigendecompositions of the covariances, computed once per (layer, site) and shared by the
//! analysis and the initialisations (q/k/v share one, gate/up share one).

use std::collections::BTreeMap;

use super::{CalibError, Covariances};
use crate::linalg::decompose::{Eigh, eigh};
use crate::model::Site;

/// Eigendecompositions of the covariances, computed once per (layer, site) and shared by the
/// modules that read the same input.
#[derive(Default)]
pub struct EighCache {
    cache: BTreeMap<(usize, Site), Eigh>,
}

impl EighCache {
    /// The decomposition of (layer, site), computing it on first use.
    pub fn get(&mut self, covs: &Covariances, layer: usize, site: Site) -> Result<&Eigh, CalibError> {
        match self.cache.entry((layer, site)) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let stats = covs
                    .sites
                    .get(&(layer, site))
                    .ok_or(CalibError::MissingStats(layer, site))?;
                let e = eigh(&stats.covariance).map_err(|source| CalibError::Decompose { layer, site, source })?;
                Ok(slot.insert(e))
            }
        }
    }

    /// Inserts a decomposition computed elsewhere (e.g. by the analysis).
    pub fn insert(&mut self, layer: usize, site: Site, e: Eigh) {
        self.cache.insert((layer, site), e);
    }
}
