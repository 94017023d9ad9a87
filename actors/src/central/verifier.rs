//! Report signatures checked in batches. Every report a host sends is signed with its key;
//! checking an Ed25519 signature is the largest single cost of taking a report. Reports that
//! arrive while a batch is being checked join the next one, which is checked in one
//! multi-scalar multiplication ([`SignedReport::verify_many`]), about half the work of checking
//! them one by one when many come at once. Batches run on the blocking pool, as many at once as
//! the process has processors.

use std::sync::Arc;

use outpost_protocol::central::{CentralError, Report, SignedReport};
use outpost_protocol::signing::PublicKey;
use outpost_protocol::verified::Verified;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A report's check: the report, or why it is refused.
pub type Checked = Result<Verified<Report>, CentralError>;

type Job = (Arc<PublicKey>, SignedReport, oneshot::Sender<Checked>);

/// Most reports checked in one batch.
const BATCH: usize = 64;

/// The batching checker's handle.
#[derive(Clone, Debug)]
pub struct ReportVerifier {
    jobs: mpsc::UnboundedSender<Job>,
}

impl ReportVerifier {
    /// Starts the checker on the current runtime.
    pub fn start() -> Self {
        // Unbounded on purpose: what is queued is bounded upstream (one report per stream,
        // streams and connections limited, frames size-limited), and batches drain it.
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Self { jobs }
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

async fn run(mut rx: mpsc::UnboundedReceiver<Job>) {
    let parallel = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let slots = Arc::new(Semaphore::new(parallel));
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
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let items: Vec<(&PublicKey, &SignedReport)> = batch.iter().map(|(k, s, _)| (&**k, s)).collect();
            let answers = SignedReport::verify_many(&items);
            drop(items);
            for ((_, _, tx), answer) in batch.into_iter().zip(answers) {
                let _ = tx.send(answer);
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
        let verifier = ReportVerifier::start();
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
}
