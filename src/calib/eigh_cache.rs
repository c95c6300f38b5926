//! Eigendecompositions of the covariances, computed once per (layer, site) and shared by the
//! analysis and the initialisations (q/k/v share one, gate/up share one).

use std::collections::BTreeMap;

use super::{CalibError, Covariances};
use crate::linalg::decompose::Eigh;
use crate::linalg::jobs::{Executor, Job, expect_eigh};
use crate::model::Site;

/// Eigendecompositions of the covariances, computed once per (layer, site) and shared by the
/// modules that read the same input.
#[derive(Default)]
pub struct EighCache {
    cache: BTreeMap<(usize, Site), Eigh>,
}

impl EighCache {
    /// The decomposition of (layer, site), computing it through `exec` on first use.
    pub async fn get(
        &mut self,
        covs: &Covariances,
        layer: usize,
        site: Site,
        exec: &dyn Executor,
    ) -> Result<&Eigh, CalibError> {
        let missing = match self.cache.get(&(layer, site)) {
            Some(_) => None,
            None => Some(
                covs.sites
                    .get(&(layer, site))
                    .ok_or(CalibError::MissingStats(layer, site))?
                    .covariance
                    .clone(),
            ),
        };
        if let Some(c) = missing {
            let e = exec
                .submit(Job::Eigh(c))
                .await
                .and_then(expect_eigh)
                .map_err(|source| CalibError::Decompose { layer, site, source })?;
            self.cache.insert((layer, site), e);
        }
        Ok(&self.cache[&(layer, site)])
    }

    /// Inserts a decomposition computed elsewhere (e.g. by the analysis).
    pub fn insert(&mut self, layer: usize, site: Site, e: Eigh) {
        self.cache.insert((layer, site), e);
    }
}
