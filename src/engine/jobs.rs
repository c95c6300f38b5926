//! Where the heavy maths runs. A [`Job`] (an eigendecomposition, an SVD, one module's
//! initialisation) is plain data; an [`Executor`] runs it: [`Inline`] on the calling thread
//! (natively, with faer on every core), or the browser's maths worker (`app::worker`), which
//! receives jobs in the byte encoding below so the engine stays free to answer pause and cancel.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use super::EngineError;
use crate::calib::{CalibError, Covariances, SiteStats};
use crate::linalg::Matrix;
use crate::linalg::decompose::{DecomposeError, Eigh};
use crate::linalg::init::{InitFactors, Pick};
use crate::linalg::jobs::{Formula, Job, JobOutput, run};
use crate::model::Site;

/// Why a job did not produce its output.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The maths failed (non-finite input, no convergence).
    #[error(transparent)]
    Maths(#[from] DecomposeError),
    /// The worker that ran the job failed or sent something unreadable.
    #[error("the maths worker: {0}")]
    Worker(String),
    /// The user cancelled the work this job belonged to.
    #[error("cancelled")]
    Cancelled,
}

/// A boxed job future.
pub type JobFuture<'a> = Pin<Box<dyn Future<Output = Result<JobOutput, JobError>> + 'a>>;

/// Where jobs run.
pub trait Executor {
    /// Submits a job and resolves with its output. An executor that runs jobs elsewhere sends
    /// the job on at this call, not when the future is first polled, so a caller that submits
    /// several before awaiting any has them computed side by side.
    fn submit(&self, job: Job) -> JobFuture<'_>;

    /// How many jobs it computes side by side (its workers).
    fn parallelism(&self) -> usize {
        1
    }
}

/// At most this many bytes of job inputs in flight (each is a copy: an 8192-wide covariance is
/// 0.5 GB in f64); a bigger job goes alone.
const IN_FLIGHT_BYTES: usize = 256 << 20;

/// Jobs sent through an executor and not yet awaited, oldest first, for a caller that streams
/// many: twice the executor's workers at once (each busy with one and holding the next, so none
/// waits for a round trip), and at most [`IN_FLIGHT_BYTES`] of inputs. The caller sends a job,
/// then awaits every job [`InFlight::due`] hands back.
pub struct InFlight<'a, T> {
    queue: VecDeque<(T, usize, JobFuture<'a>)>,
    bytes: usize,
    window: usize,
}

impl<'a, T> InFlight<'a, T> {
    /// None in flight yet, for jobs sent through `exec`.
    pub fn new(exec: &dyn Executor) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            window: 2 * exec.parallelism().max(1),
        }
    }

    /// Sends `job` through `exec`, tagged `tag`.
    pub fn send(&mut self, exec: &'a dyn Executor, tag: T, job: Job) {
        let size = job.input_bytes();
        self.bytes += size;
        self.queue.push_back((tag, size, exec.submit(job)));
    }

    /// The oldest job, to be awaited now: while the window or the byte budget is full, and after
    /// the `last` send until none is left; `None` otherwise.
    pub fn due(&mut self, last: bool) -> Option<(T, JobFuture<'a>)> {
        let full = self.queue.len() >= self.window || self.bytes > IN_FLIGHT_BYTES;
        if !(full || last) {
            return None;
        }
        let (tag, size, job) = self.queue.pop_front()?;
        self.bytes -= size;
        Some((tag, job))
    }
}

/// Runs every job immediately on the calling thread.
pub struct Inline;

impl Executor for Inline {
    fn submit(&self, job: Job) -> JobFuture<'_> {
        Box::pin(std::future::ready(run(job).map_err(JobError::from)))
    }
}

/// Runs jobs side by side on rayon's threads (natively): each job on one thread, so that the
/// analysis's decompositions, many and independent, run one per core, where faer's own threads
/// inside one decomposition gain less (1.6x on two cores, `bench analysis`). faer's parallel
/// parts inside a job nest in the same pool. A panic inside a job becomes its error.
#[cfg(not(target_arch = "wasm32"))]
pub struct Threads {
    workers: usize,
}

#[cfg(not(target_arch = "wasm32"))]
impl Threads {
    /// As many workers as rayon has threads.
    pub fn new() -> Self {
        Self {
            workers: rayon::current_num_threads().max(1),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Default for Threads {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Executor for Threads {
    fn submit(&self, job: Job) -> JobFuture<'_> {
        let slot = std::sync::Arc::new(threads::Slot::default());
        let filled = slot.clone();
        rayon::spawn(move || {
            let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job))) {
                Ok(out) => out.map_err(JobError::from),
                Err(_) => Err(JobError::Worker("a maths job panicked".into())),
            };
            filled.fill(out);
        });
        Box::pin(threads::Pending(slot))
    }

    fn parallelism(&self) -> usize {
        self.workers
    }
}

/// A job's output handed from its thread to the future that awaits it.
#[cfg(not(target_arch = "wasm32"))]
mod threads {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    use super::{JobError, JobOutput};

    type Output = Result<JobOutput, JobError>;

    /// The output once there, and who waits for it.
    #[derive(Default)]
    pub(super) struct Slot(Mutex<(Option<Output>, Option<Waker>)>);

    impl Slot {
        pub(super) fn fill(&self, out: Output) {
            let waker = {
                let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
                state.0 = Some(out);
                state.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Resolves with the slot's output.
    pub(super) struct Pending(pub(super) Arc<Slot>);

    impl Future for Pending {
        type Output = Output;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Output> {
            let mut state = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
            match state.0.take() {
                Some(out) => Poll::Ready(out),
                None => {
                    state.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }
}

pub(crate) fn wrong_kind() -> JobError {
    JobError::Worker("a reply of the wrong kind".into())
}

/// Runs an eigendecomposition.
pub async fn eigh(exec: &dyn Executor, c: Matrix) -> Result<Eigh, JobError> {
    match exec.submit(Job::Eigh(c)).await? {
        JobOutput::Eigh(e) => Ok(e),
        _ => Err(wrong_kind()),
    }
}

/// One layer's smallest-eigenpair jobs in flight ([`EighCache::send_smallest`]).
pub struct SmallestJobs<'a> {
    layer: usize,
    jobs: Vec<(Site, usize, JobFuture<'a>)>,
}

impl SmallestJobs<'_> {
    /// The bytes of their inputs (the covariances handed over).
    pub fn input_bytes(&self) -> usize {
        self.jobs.iter().map(|(_, b, _)| b).sum()
    }
}

/// Eigendecompositions of the covariances, computed once per (layer, site) and shared by the
/// analysis and the initialisations (q/k/v share one, gate/up share one).
#[derive(Default)]
pub struct EighCache {
    cache: BTreeMap<(usize, Site), Eigh>,
}

impl EighCache {
    /// Sends the jobs for the `r` smallest eigenpairs of `sites` of `layer` through `exec`, all
    /// before any is awaited (side by side on the page's maths workers), taking each covariance
    /// out of `covs` (it is left empty) so that it is not copied. For a caller that needs nothing
    /// else of the covariances; [`EighCache::receive`] awaits them.
    pub fn send_smallest<'a>(
        covs: &mut Covariances,
        layer: usize,
        sites: &[Site],
        r: usize,
        exec: &'a dyn Executor,
    ) -> Result<SmallestJobs<'a>, EngineError> {
        let mut jobs = Vec::with_capacity(sites.len());
        for &site in sites {
            let stats = covs
                .sites
                .get_mut(&(layer, site))
                .ok_or(CalibError::MissingStats(layer, site))?;
            let c = std::mem::replace(&mut stats.covariance, Matrix::zeros(0, 0));
            let job = Job::SmallestEigh { c, r };
            jobs.push((site, job.input_bytes(), exec.submit(job)));
        }
        Ok(SmallestJobs { layer, jobs })
    }

    /// Awaits jobs sent by [`EighCache::send_smallest`] and keeps their pairs
    /// ([`EighCache::cached`]).
    pub async fn receive(&mut self, sent: SmallestJobs<'_>) -> Result<(), EngineError> {
        let layer = sent.layer;
        for (site, _, job) in sent.jobs {
            let context = || format!("layer {layer} {}", site.name());
            let e = match job.await.map_err(EngineError::job(context()))? {
                JobOutput::Eigh(e) => e,
                _ => return Err(EngineError::job(context())(wrong_kind())),
            };
            self.cache.insert((layer, site), e);
        }
        Ok(())
    }

    /// The decomposition of (layer, site) if computed.
    pub fn cached(&self, layer: usize, site: Site) -> Option<&Eigh> {
        self.cache.get(&(layer, site))
    }

    /// Computes the decompositions of `keys` not yet kept, through `exec`, several in flight
    /// ([`InFlight`]) and the widest first (so that the long ones start early and the short
    /// ones fill in). A key without a statistic is skipped. `progress(done, total)` after each.
    pub async fn fill(
        &mut self,
        covs: &Covariances,
        keys: &[(usize, Site)],
        exec: &dyn Executor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), EngineError> {
        let mut todo: Vec<(usize, Site, &SiteStats)> = keys
            .iter()
            .filter(|k| !self.cache.contains_key(k))
            .filter_map(|&(layer, site)| covs.sites.get(&(layer, site)).map(|s| (layer, site, s)))
            .collect();
        todo.sort_by_key(|(layer, _, s)| (std::cmp::Reverse(s.covariance.rows), *layer));
        let total = todo.len();
        let mut jobs = InFlight::new(exec);
        let mut done = 0;
        for (i, (layer, site, stats)) in todo.into_iter().enumerate() {
            jobs.send(exec, (layer, site), Job::Eigh(stats.covariance.clone()));
            while let Some(((layer, site), job)) = jobs.due(i + 1 == total) {
                let context = || format!("layer {layer} {}", site.name());
                let e = match job.await.map_err(EngineError::job(context()))? {
                    JobOutput::Eigh(e) => e,
                    _ => return Err(EngineError::job(context())(wrong_kind())),
                };
                self.cache.insert((layer, site), e);
                done += 1;
                progress(done, total);
            }
        }
        Ok(())
    }

    /// The decomposition of (layer, site), computing it through `exec` on first use; `None` when
    /// the covariances have no statistic for that site.
    pub async fn get(
        &mut self,
        covs: &Covariances,
        layer: usize,
        site: Site,
        exec: &dyn Executor,
    ) -> Result<Option<&Eigh>, JobError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.cache.entry((layer, site)) {
            let Some(stats) = covs.sites.get(&(layer, site)) else {
                return Ok(None);
            };
            slot.insert(eigh(exec, stats.covariance.clone()).await?);
        }
        Ok(self.cache.get(&(layer, site)))
    }

    /// The statistic of (layer, site) and its decomposition; a missing statistic or a failed
    /// decomposition is an engine error naming the site.
    pub async fn site<'a>(
        &'a mut self,
        covs: &'a Covariances,
        layer: usize,
        site: Site,
        exec: &dyn Executor,
    ) -> Result<(&'a SiteStats, &'a Eigh), EngineError> {
        let stats = covs
            .sites
            .get(&(layer, site))
            .ok_or(CalibError::MissingStats(layer, site))?;
        let e = self
            .get(covs, layer, site, exec)
            .await
            .map_err(EngineError::job(format!("layer {layer} {}", site.name())))?
            .ok_or(CalibError::MissingStats(layer, site))?;
        Ok((stats, e))
    }
}

// ---- binary encoding (little-endian), for postMessage ------------------------------------

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend(v.to_le_bytes());
}

fn put_matrix(out: &mut Vec<u8>, m: &Matrix) {
    put_u64(out, m.rows as u64);
    put_u64(out, m.cols as u64);
    for v in &m.data {
        out.extend(v.to_le_bytes());
    }
}

fn put_vec(out: &mut Vec<u8>, v: &[f64]) {
    put_u64(out, v.len() as u64);
    for x in v {
        out.extend(x.to_le_bytes());
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        Some(u64::from_le_bytes(head.try_into().ok()?))
    }
    fn f64(&mut self) -> Option<f64> {
        self.u64().map(f64::from_bits)
    }
    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() / 8 + 1).then_some(n)
    }
    fn vec(&mut self) -> Option<Vec<f64>> {
        let n = self.len()?;
        (0..n).map(|_| self.f64()).collect()
    }
    fn matrix(&mut self) -> Option<Matrix> {
        let rows = self.len()?;
        let cols = self.len()?;
        let n = rows.checked_mul(cols)?;
        if n > self.0.len() / 8 {
            return None;
        }
        Matrix::from_vec(rows, cols, (0..n).map(|_| self.f64()).collect::<Option<_>>()?)
    }
}

fn formula_code(f: Formula) -> u64 {
    match f {
        Formula::Kaiming => 0,
        Formula::Gaussian => 1,
        Formula::Svd(Pick::Top) => 2,
        Formula::Svd(Pick::Bottom) => 3,
        Formula::Olora => 4,
        Formula::Corda(Pick::Top) => 5,
        Formula::Corda(Pick::Bottom) => 6,
        Formula::Null => 7,
        Formula::NullZero => 8,
    }
}

fn formula_from(code: u64) -> Option<Formula> {
    Some(match code {
        0 => Formula::Kaiming,
        1 => Formula::Gaussian,
        2 => Formula::Svd(Pick::Top),
        3 => Formula::Svd(Pick::Bottom),
        4 => Formula::Olora,
        5 => Formula::Corda(Pick::Top),
        6 => Formula::Corda(Pick::Bottom),
        7 => Formula::Null,
        8 => Formula::NullZero,
        _ => return None,
    })
}

fn put_dims(out: &mut Vec<u8>, m: &Matrix) {
    put_u64(out, m.rows as u64);
    put_u64(out, m.cols as u64);
}

/// Takes the next matrix of `data`, whose dimensions the header gives next.
fn take_matrix(c: &mut Cursor<'_>, data: &mut std::vec::IntoIter<Vec<f64>>) -> Option<Matrix> {
    let rows = usize::try_from(c.u64()?).ok()?;
    let cols = usize::try_from(c.u64()?).ok()?;
    Matrix::from_vec(rows, cols, data.next()?)
}

impl Job {
    /// The job for a transfer: a small header (its kind, the matrices' dimensions, the
    /// scalars) and its matrices' values, which the page sends as typed arrays so that a
    /// covariance is copied once on each side and never serialised ([`Job::from_parts`]).
    pub fn parts(&self) -> (Vec<u8>, Vec<&[f64]>) {
        let mut out = Vec::new();
        let data = match self {
            Job::Eigh(c) => {
                put_u64(&mut out, 0);
                put_dims(&mut out, c);
                vec![&c.data[..]]
            }
            Job::SingularValues(w) => {
                put_u64(&mut out, 1);
                put_dims(&mut out, w);
                vec![&w.data[..]]
            }
            Job::SmallestEigh { c, r } => {
                put_u64(&mut out, 3);
                put_dims(&mut out, c);
                put_u64(&mut out, *r as u64);
                vec![&c.data[..]]
            }
            Job::Factors {
                formula,
                w,
                aux,
                rank,
                scale,
                seed,
            } => {
                put_u64(&mut out, 2);
                put_u64(&mut out, formula_code(*formula));
                put_dims(&mut out, w);
                put_dims(&mut out, aux);
                put_u64(&mut out, *rank as u64);
                out.extend(scale.to_le_bytes());
                put_u64(&mut out, *seed);
                vec![&w.data[..], &aux.data[..]]
            }
        };
        (out, data)
    }

    /// The job from [`Job::parts`]' header and matrices (taken over, not copied); `None` if the
    /// header is malformed or a matrix does not have the size it gives.
    pub fn from_parts(header: &[u8], data: Vec<Vec<f64>>) -> Option<Job> {
        let mut c = Cursor(header);
        let mut data = data.into_iter();
        let job = match c.u64()? {
            0 => Job::Eigh(take_matrix(&mut c, &mut data)?),
            1 => Job::SingularValues(take_matrix(&mut c, &mut data)?),
            3 => Job::SmallestEigh {
                c: take_matrix(&mut c, &mut data)?,
                r: usize::try_from(c.u64()?).ok()?,
            },
            2 => Job::Factors {
                formula: formula_from(c.u64()?)?,
                w: take_matrix(&mut c, &mut data)?,
                aux: take_matrix(&mut c, &mut data)?,
                rank: usize::try_from(c.u64()?).ok()?,
                scale: c.f64()?,
                seed: c.u64()?,
            },
            _ => return None,
        };
        (c.0.is_empty() && data.next().is_none()).then_some(job)
    }
}

impl JobOutput {
    /// Encodes the output for transfer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            JobOutput::Eigh(e) => {
                put_u64(&mut out, 0);
                put_vec(&mut out, &e.values);
                put_matrix(&mut out, &e.vectors);
            }
            JobOutput::Values(v) => {
                put_u64(&mut out, 1);
                put_vec(&mut out, v);
            }
            JobOutput::Factors(f) => {
                put_u64(&mut out, 2);
                put_matrix(&mut out, &f.a);
                put_matrix(&mut out, &f.b);
                match &f.residual {
                    Some(r) => {
                        put_u64(&mut out, 1);
                        put_matrix(&mut out, r);
                    }
                    None => put_u64(&mut out, 0),
                }
            }
        }
        out
    }

    /// Decodes bytes from [`JobOutput::encode`]; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<JobOutput> {
        let mut c = Cursor(bytes);
        Some(match c.u64()? {
            0 => JobOutput::Eigh(Eigh {
                values: c.vec()?,
                vectors: c.matrix()?,
            }),
            1 => JobOutput::Values(c.vec()?),
            2 => JobOutput::Factors(InitFactors {
                a: c.matrix()?,
                b: c.matrix()?,
                residual: match c.u64()? {
                    1 => Some(c.matrix()?),
                    _ => None,
                },
            }),
            _ => return None,
        })
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::linalg::Rng;
    use crate::linalg::decompose::eigh as full_eigh;
    use crate::linalg::init;

    fn random(rows: usize, cols: usize, seed: u64) -> Matrix {
        let mut rng = Rng::new(seed);
        Matrix::from_fn(rows, cols, |_, _| rng.normal())
    }

    #[test]
    fn jobs_and_their_outputs_survive_the_worker_encoding_and_match_inline_runs() {
        let w = random(12, 9, 3);
        let x = random(20, 9, 4);
        let c = x.t().matmul(&x);
        let p = init::null_basis(&full_eigh(&c).unwrap(), 3);
        let jobs = [
            Job::Eigh(c.clone()),
            Job::SmallestEigh { c: c.clone(), r: 2 },
            Job::SingularValues(w.clone()),
            Job::Factors {
                formula: Formula::Null,
                w: w.clone(),
                aux: p,
                rank: 3,
                scale: 2.0,
                seed: 1,
            },
            Job::Factors {
                formula: Formula::Corda(Pick::Bottom),
                w: w.clone(),
                aux: c,
                rank: 3,
                scale: 1.0,
                seed: 1,
            },
            Job::Factors {
                formula: Formula::Kaiming,
                w: w.clone(),
                aux: Matrix::zeros(0, 0),
                rank: 3,
                scale: 1.0,
                seed: 9,
            },
            // A rank larger than the bytes that follow it: no element-count check may apply to it.
            Job::Factors {
                formula: Formula::Svd(Pick::Top),
                w,
                aux: Matrix::zeros(0, 0),
                rank: 8,
                scale: 1.0,
                seed: 9,
            },
        ];
        for job in jobs {
            let (header, data) = job.parts();
            let owned = || data.iter().map(|d| d.to_vec()).collect::<Vec<_>>();
            let decoded = Job::from_parts(&header, owned()).expect("decodes");
            let (header2, data2) = decoded.parts();
            assert_eq!((&header2, &data2), (&header, &data));
            // Truncated headers, a missing, extra or shortened matrix are rejected, never panic.
            for cut in [0, 1, 7, header.len() / 2, header.len() - 1] {
                assert!(Job::from_parts(&header[..cut], owned()).is_none());
            }
            let mut missing = owned();
            missing.pop();
            assert!(Job::from_parts(&header, missing).is_none());
            let mut extra = owned();
            extra.push(vec![1.0]);
            assert!(Job::from_parts(&header, extra).is_none());
            let mut short = owned();
            if let Some(m) = short.iter_mut().find(|m| !m.is_empty()) {
                m.pop();
                assert!(Job::from_parts(&header, short).is_none());
            }
            let out = run(decoded).unwrap();
            let round = JobOutput::decode(&out.encode()).expect("output decodes");
            assert_eq!(round.encode(), out.encode());
        }
        // Dimensions whose product overflows are refused, not multiplied.
        let mut huge = Vec::new();
        for v in [0, u64::MAX / 2, 4] {
            put_u64(&mut huge, v);
        }
        assert!(Job::from_parts(&huge, vec![Vec::new()]).is_none());
    }

    /// Jobs on rayon's threads, all sent before any is awaited: each output is the inline run's,
    /// bit for bit, and a job whose input is not finite comes back as its error, the others
    /// unharmed.
    #[test]
    fn jobs_side_by_side_on_threads_give_the_inline_outputs_and_their_errors() {
        let threads = Threads::new();
        assert!(threads.parallelism() >= 1);
        let covariance = |seed| {
            let x = random(40, 30, seed);
            x.t().matmul(&x)
        };
        let mut bad = covariance(1);
        bad.data[5] = f64::NAN;
        let jobs: Vec<Job> = (0..6)
            .map(|i| Job::Eigh(covariance(10 + i)))
            .chain([Job::Eigh(bad), Job::SmallestEigh { c: covariance(3), r: 4 }])
            .collect();
        let want: Vec<_> = jobs.iter().map(|j| run(j.clone()).map(|o| o.encode())).collect();
        let sent: Vec<_> = jobs.into_iter().map(|j| threads.submit(j)).collect();
        for (i, (job, want)) in sent.into_iter().zip(want).enumerate() {
            let got = pollster::block_on(job);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got.encode(), want, "job {i}"),
                (Err(JobError::Maths(_)), Err(_)) => {}
                (got, want) => panic!(
                    "job {i}: {:?} against {:?}",
                    got.map(|o| o.encode().len()),
                    want.map(|w| w.len())
                ),
            }
        }
    }
}
