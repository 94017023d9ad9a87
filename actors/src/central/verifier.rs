//! Report signatures checked in batches. Every report a host sends is signed with its key;
//! checking an Ed25519 signature is the largest single cost of taking a report. Reports that
//! arrive while a batch is being checked join the next one (up to [`BATCH`]), which is checked
//! in one multi-scalar multiplication ([`SignedReport::verify_many`]). Batches run on the
//! blocking pool, as many at once as the process has processors.
//!
//! Per signature (`cargo bench -p outpost-bench --bench core -- "report signatures"`,
//! bench/README.md): 37.5 µs alone, 16.6 µs in batches of 64, 13.8 µs in batches of 256
//! (above 95 signatures curve25519-dalek uses Pippenger's method instead of Straus's).
//!
//! A batch that does not verify is checked again one signature at a time to find the
//! culprit, so a forged report would cost central its whole batch again (about 9 ms for 256).
//! The key of a report that failed is therefore remembered ([`SUSPECTS`] at most), and that
//! key's later reports are checked alone, outside the batches: a host sending forged reports
//! makes central redo a batch once, not at every report.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use outpost_protocol::central::{CentralError, Report, SignedReport};
use outpost_protocol::signing::{PublicKey, SignatureError};
use outpost_protocol::verified::Verified;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A report's check: the report, or why it is refused.
pub type Checked = Result<Verified<Report>, CentralError>;

type Job = (Arc<PublicKey>, SignedReport, oneshot::Sender<Checked>);

/// Most reports checked in one batch.
const BATCH: usize = 256;

/// Most keys remembered for a failed report (forgotten all at once when full).
const SUSPECTS: usize = 4096;

/// The batching checker's handle.
#[derive(Clone, Debug)]
pub struct ReportVerifier {
    jobs: mpsc::UnboundedSender<Job>,
    redone: Counter,
}

impl ReportVerifier {
    /// Starts the checker on the current runtime; `redone` counts the batches that did not
    /// verify (`outpost_central_report_batches_redone_total`).
    pub fn start(redone: Counter) -> Self {
        // Unbounded on purpose: what is queued is bounded upstream (one report per stream,
        // streams and connections limited, frames size-limited), and batches drain it.
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, redone.clone()));
        Self { jobs, redone }
    }

    /// Batches that did not verify and were checked again one signature at a time.
    pub fn batches_redone(&self) -> u64 {
        self.redone.get()
    }

    /// Checks `report`'s signature by `public_key` (the host certificate's key, read once for
    /// its connection) and decodes it: what [`SignedReport::verify`] answers.
    pub async fn verify(&self, public_key: Arc<PublicKey>, report: SignedReport) -> Checked {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((key, report, _))) = self.jobs.send((public_key, report, tx)) {
            return report.verify(key.as_bytes());
        }
        rx.await.unwrap_or_else(|_| {
            Err(CentralError::Decode { what: "inventory report", reason: "its check was interrupted".into() })
        })
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Job>, redone: Counter) {
    let parallel = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let slots = Arc::new(Semaphore::new(parallel));
    let suspects: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    while let Some(first) = rx.recv().await {
        // A free slot first: what arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (suspects, redone) = (suspects.clone(), redone.clone());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let (alone, together): (Vec<Job>, Vec<Job>) = {
                let known = suspects.lock().expect("not poisoned");
                batch.into_iter().partition(|(key, _, _)| known.contains(key.as_bytes()))
            };
            let items: Vec<(&PublicKey, &SignedReport)> = together.iter().map(|(k, s, _)| (&**k, s)).collect();
            let answers = SignedReport::verify_many(&items);
            drop(items);
            let spoiled =
                |a: &Checked| matches!(a, Err(CentralError::Signature { error: SignatureError::Mismatch, .. }));
            if together.len() > 1 && answers.iter().any(spoiled) {
                redone.inc();
            }
            // The keys that failed are known before anyone hears the answer (and sends again).
            let failed: Vec<Vec<u8>> = together
                .iter()
                .zip(&answers)
                .filter(|(_, a)| matches!(a, Err(CentralError::Signature { .. })))
                .map(|((key, _, _), _)| key.as_bytes().to_vec())
                .collect();
            if !failed.is_empty() {
                let mut known = suspects.lock().expect("not poisoned");
                if known.len() + failed.len() > SUSPECTS {
                    known.clear();
                }
                known.extend(failed);
            }
            for ((_, _, tx), answer) in together.into_iter().zip(answers) {
                let _ = tx.send(answer);
            }
            for (key, report, tx) in alone {
                let _ = tx.send(report.verify(key.as_bytes()));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::pki::PrivateKey;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_checked_at_once_get_each_its_own_answer() {
        let verifier = ReportVerifier::start(Counter::default());
        let keys: Vec<PrivateKey> = (0..40).map(|_| PrivateKey::generate().unwrap()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, key) in keys.iter().enumerate() {
            let report =
                Report { host: format!("uuid-{i}"), sequence: i as u64 + 1, full: true, created: 0, sections: vec![] };
            let signed = report.sign(key);
            // Every third is checked against another host's key: refused, alone.
            let public = if i % 3 == 2 { keys[0].public_key() } else { key.public_key() };
            let public = Arc::new(PublicKey::new(&public));
            let v = verifier.clone();
            tasks.spawn(async move { (i, v.verify(public, signed).await) });
        }
        let mut seen = 0;
        while let Some(r) = tasks.join_next().await {
            let (i, checked) = r.unwrap();
            match checked {
                Ok(report) => {
                    assert!(i % 3 != 2, "report {i} passed with another key");
                    assert_eq!(report.sequence, i as u64 + 1);
                }
                Err(e) => assert!(i % 3 == 2 && matches!(e, CentralError::Signature { .. }), "report {i}: {e}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 40);
    }

    /// Signs a delta of host `i` with `key`.
    fn signed(i: usize, key: &PrivateKey) -> SignedReport {
        Report { host: format!("uuid-{i}"), sequence: 1, full: false, created: 0, sections: vec![] }.sign(key)
    }

    /// Sends every report before the checker runs (one thread: the spawned tasks run in order,
    /// the checker's after them), so they are checked as one batch; the answers in order.
    async fn check_together(verifier: &ReportVerifier, jobs: Vec<(Arc<PublicKey>, SignedReport)>) -> Vec<bool> {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(public, report)| {
                let v = verifier.clone();
                tokio::spawn(async move { v.verify(public, report).await.is_ok() })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_key_that_signed_a_forged_report_has_its_later_reports_checked_outside_the_batches() {
        let verifier = ReportVerifier::start(Counter::default());
        let keys: Vec<PrivateKey> = (0..30).map(|_| PrivateKey::generate().unwrap()).collect();
        let public = |k: &PrivateKey| Arc::new(PublicKey::new(&k.public_key()));
        let forger = PrivateKey::generate().unwrap();
        // Reports claiming the forger's key, signed by another.
        let forged = |i| (public(&forger), signed(i, &keys[0]));
        let round = |first: usize| {
            let mut jobs: Vec<_> = keys.iter().enumerate().map(|(i, k)| (public(k), signed(first + i, k))).collect();
            jobs.insert(7, forged(first + 99));
            jobs
        };
        let expected: Vec<bool> = (0..31).map(|i| i != 7).collect();
        // The first forged report spoils its batch: checked again one by one, the others pass.
        assert_eq!(check_together(&verifier, round(0)).await, expected);
        assert_eq!(verifier.batches_redone(), 1);
        // The forger's next reports are checked alone: the batches they come with pass at once.
        assert_eq!(check_together(&verifier, round(100)).await, expected);
        assert_eq!(check_together(&verifier, round(200)).await, expected);
        assert_eq!(verifier.batches_redone(), 1, "a known forger's report spoiled another batch");
        // And a report it really signed still passes.
        let honest = check_together(&verifier, vec![(public(&forger), signed(300, &forger))]).await;
        assert_eq!(honest, vec![true]);
    }
}
