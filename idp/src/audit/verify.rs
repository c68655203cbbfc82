//! Verification of the durable log (`habilis audit verify`) and of archives (`--archive FILE`).
//!
//! What is checked, record by record in `seq` order from the first one (1, or the one after the
//! latest purge anchor):
//! - `seq` continuity: a gap is a deletion;
//! - `prev_hash` is the previous record's `hash` (or genesis, or the anchor's hash);
//! - `personal_digest` matches the personal fields, unless the record was pseudonymised;
//! - `hash` matches the record's fields;
//! - a signed checkpoint at this `seq` names this `hash` (else the chain was rewritten);
//!
//! and for the whole log: every checkpoint and anchor is signed by a Habilis key (see
//! [`KeyRing`]); no checkpoint lies beyond the last record, and the head row (moved in the same
//! transaction as every append) is the last record (else records were cut off or added outside
//! Habilis); every pseudonymised record carries a pseudonym named by an erasure record
//! (`account_deleted`, `person_erased`), so that marking a record pseudonymised does not let its
//! personal fields be rewritten freely.
//!
//! Speed: the hashes of a page are recomputed on every core while the next page is read from the
//! database; only the linkage, a string comparison per record, is sequential.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::chain::{self, GENESIS, RecordCheck};
use super::checkpoint::{KeyRing, verify_anchor, verify_checkpoint};
use crate::keys::MasterKey;
use crate::store::{AuditAnchor, AuditCheckpoint, AuditStore, StoreError, StoredAuditRecord};

/// Records read per page.
pub const PAGE_SIZE: i64 = 10_000;

/// Events whose subject is the pseudonym that replaced an erased account.
const ERASURE_EVENTS: &[&str] = &["account_deleted", "person_erased"];

/// The first problem found.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A record is wrong, or something is wrong just at or after it.
    #[error("record {seq} (time {}, event {event}): {problem}", super::cli::format_time(*.time))]
    Record { seq: i64, time: i64, event: String, problem: String },
    /// Wrong without a record to name (an empty log with a checkpoint, a bad anchor…).
    #[error("{0}")]
    Log(String),
    #[error("reading the audit log: {0}")]
    Store(#[from] StoreError),
    #[error("reading the archive: {0}")]
    Archive(String),
}

impl VerifyError {
    /// The seq of the record named, if any.
    pub fn seq(&self) -> Option<i64> {
        match self {
            VerifyError::Record { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub first_seq: Option<i64>,
    pub last_seq: i64,
    pub last_hash: String,
    pub checkpoints: usize,
    /// The anchor verification started from (after a purge).
    pub anchor_seq: Option<i64>,
    pub pseudonymised: u64,
}

fn record_error(r: &StoredAuditRecord, problem: impl Into<String>) -> VerifyError {
    VerifyError::Record { seq: r.seq, time: r.time, event: r.event.clone(), problem: problem.into() }
}

/// What the verifier keeps of a pseudonymised record until it has seen the whole log.
struct PseudonymisedRecord {
    seq: i64,
    time: i64,
    event: String,
    actor: Option<String>,
    subject: Option<String>,
}

/// The sequential part of verification: fed pages of records (with their [`RecordCheck`]s) in
/// `seq` order, it checks continuity, links and checkpoints. Shared by the store and archive
/// verifications.
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    /// Verified checkpoints: seq → hash.
    checkpoints: BTreeMap<i64, String>,
    pseudonyms: HashSet<String>,
    /// Pseudonymised records, checked at the end against the erasure records.
    pseudonymised: Vec<PseudonymisedRecord>,
    records: u64,
    first_seq: Option<i64>,
    last: Option<(i64, i64, String)>,
    anchor_seq: Option<i64>,
}

impl ChainVerifier {
    /// Expects record `start_seq` to link to `start_hash`.
    pub fn new(
        start_seq: i64,
        start_hash: &str,
        checkpoints: BTreeMap<i64, String>,
        anchor_seq: Option<i64>,
    ) -> ChainVerifier {
        ChainVerifier {
            expected_seq: start_seq,
            prev_hash: start_hash.to_string(),
            checkpoints,
            pseudonyms: HashSet::new(),
            pseudonymised: Vec::new(),
            records: 0,
            first_seq: None,
            last: None,
            anchor_seq,
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn feed(&mut self, page: &[StoredAuditRecord], checks: &[RecordCheck]) -> Result<(), VerifyError> {
        for (r, check) in page.iter().zip(checks) {
            if r.seq != self.expected_seq {
                let problem = if r.seq > self.expected_seq {
                    let missing = if r.seq - 1 == self.expected_seq {
                        format!("record {} is missing", self.expected_seq)
                    } else {
                        format!("records {} to {} are missing", self.expected_seq, r.seq - 1)
                    };
                    format!("{missing} before it (deleted)")
                } else {
                    format!("out of order: record {} was expected", self.expected_seq)
                };
                return Err(record_error(r, problem));
            }
            if check.personal_ok == Some(false) {
                return Err(record_error(
                    r,
                    "its personal fields (actor, subject, ip, user agent, details) do not match its \
                     personal_digest: modified",
                ));
            }
            if !check.hash_ok {
                return Err(record_error(r, "its content does not match its hash: modified"));
            }
            if r.prev_hash != self.prev_hash {
                let problem = if self.records == 0 {
                    match self.anchor_seq {
                        Some(anchor) => format!(
                            "its prev_hash is not the hash the purge anchor at seq {anchor} signed: the \
                             record was replaced or the anchor moved"
                        ),
                        None => "its prev_hash is not the genesis value: the first record was replaced".to_string(),
                    }
                } else {
                    format!("its prev_hash is not the hash of record {}: a record was replaced or re-hashed", r.seq - 1)
                };
                return Err(record_error(r, problem));
            }
            if let Some(signed) = self.checkpoints.get(&r.seq)
                && *signed != r.hash
            {
                return Err(record_error(
                    r,
                    "its hash differs from the signed checkpoint at this seq: the chain was rewritten",
                ));
            }
            if r.pseudonymised_at.is_none()
                && ERASURE_EVENTS.contains(&r.event.as_str())
                && let Some(subject) = &r.subject
            {
                self.pseudonyms.insert(subject.clone());
            }
            if r.pseudonymised_at.is_some() {
                self.pseudonymised.push(PseudonymisedRecord {
                    seq: r.seq,
                    time: r.time,
                    event: r.event.clone(),
                    actor: r.actor.clone(),
                    subject: r.subject.clone(),
                });
            }
            self.first_seq.get_or_insert(r.seq);
            self.records += 1;
            self.expected_seq = r.seq + 1;
            self.prev_hash.clone_from(&r.hash);
            self.last = Some((r.seq, r.time, r.event.clone()));
        }
        Ok(())
    }

    /// The last record seen as an error subject, or a log-level error.
    fn at_last(&self, problem: String) -> VerifyError {
        match &self.last {
            Some((seq, time, event)) => VerifyError::Record { seq: *seq, time: *time, event: event.clone(), problem },
            None => VerifyError::Log(problem),
        }
    }

    /// The end checks: the log ends at `(end_seq, end_hash)` (the head, or an archive's anchor),
    /// no checkpoint lies beyond it, and pseudonymised records are accounted for.
    pub fn finish(self, end_seq: i64, end_hash: &str) -> Result<Verified, VerifyError> {
        self.finish_with(end_seq, end_hash, true)
    }

    /// [`ChainVerifier::finish`] for an archive: the erasure records naming the pseudonyms of its
    /// pseudonymised records may lie after it, in the log.
    pub fn finish_archive(self, end_seq: i64, end_hash: &str) -> Result<Verified, VerifyError> {
        self.finish_with(end_seq, end_hash, false)
    }

    fn finish_with(self, end_seq: i64, end_hash: &str, erasures_inside: bool) -> Result<Verified, VerifyError> {
        let last_seq = self.expected_seq - 1;
        if last_seq < end_seq {
            let problem = format!(
                "the log ends at seq {last_seq} but its head says {end_seq}: records {} to {end_seq} were cut off \
                 (truncation)",
                last_seq + 1
            );
            return Err(self.at_last(problem));
        }
        if last_seq == end_seq && self.prev_hash != end_hash {
            return Err(self.at_last("its hash is not the head's: the last record was replaced".into()));
        }
        if let Some((&seq, _)) = self.checkpoints.range(last_seq + 1..).next() {
            let problem = format!(
                "a signed checkpoint exists at seq {seq}, beyond this last record: records {} to {seq} were \
                 deleted (truncation)",
                last_seq + 1
            );
            return Err(self.at_last(problem));
        }
        for record in self.pseudonymised.iter().filter(|_| erasures_inside) {
            let named = |v: &Option<String>| v.as_ref().is_some_and(|p| self.pseudonyms.contains(p));
            if !named(&record.actor) && !named(&record.subject) {
                return Err(VerifyError::Record {
                    seq: record.seq,
                    time: record.time,
                    event: record.event.clone(),
                    problem: "marked pseudonymised, but no erasure record (account_deleted, person_erased) names \
                              its pseudonym: its personal fields may have been altered"
                        .into(),
                });
            }
        }
        Ok(Verified {
            records: self.records,
            first_seq: self.first_seq,
            last_seq,
            last_hash: self.prev_hash,
            checkpoints: self.checkpoints.len(),
            anchor_seq: self.anchor_seq,
            pseudonymised: self.pseudonymised.len() as u64,
        })
    }
}

/// Checks the signatures of `checkpoints` (on every core: a signature check costs tens of µs and
/// a busy year has half a million checkpoints). Returns the verified `seq → hash` map.
pub fn verify_checkpoints(
    ring: &KeyRing,
    checkpoints: &[AuditCheckpoint],
    threads: usize,
) -> Result<BTreeMap<i64, String>, VerifyError> {
    let threads = threads.clamp(1, 64);
    let chunk = checkpoints.len().div_ceil(threads).max(1);
    let failure = std::thread::scope(|scope| {
        let handles: Vec<_> = checkpoints
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().find_map(|c| verify_checkpoint(ring, c).err().map(|e| (c, e)))))
            .collect();
        handles.into_iter().filter_map(|h| h.join().expect("a verification thread panicked")).next()
    });
    if let Some((c, problem)) = failure {
        return Err(VerifyError::Log(format!("the checkpoint at seq {} is not valid: {problem}", c.seq)));
    }
    Ok(checkpoints.iter().map(|c| (c.seq, c.hash.clone())).collect())
}

/// Progress of a verification: records verified so far, of about `total`.
pub trait Progress {
    fn start(&mut self, total: u64);
    fn advance(&mut self, verified: u64);
}

/// No progress display.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: u64) {}
    fn advance(&mut self, _: u64) {}
}

/// The number of hashing threads: every core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Where verification of the stored log starts: after the latest anchor (whose signature is
/// checked), or at record 1.
fn starting_point(ring: &KeyRing, anchors: &[AuditAnchor]) -> Result<(i64, String, Option<i64>), VerifyError> {
    match anchors.last() {
        Some(anchor) => {
            verify_anchor(ring, anchor).map_err(|problem| {
                VerifyError::Log(format!("the purge anchor at seq {} is not valid: {problem}", anchor.seq))
            })?;
            Ok((anchor.seq + 1, anchor.hash.clone(), Some(anchor.seq)))
        }
        None => Ok((1, GENESIS.to_string(), None)),
    }
}

/// Verifies the durable log of `store` (see the module documentation). Records appended while
/// it runs are left for the next run: it covers the log up to the head read at its start.
pub async fn verify_store(
    store: &dyn AuditStore,
    master: Option<&MasterKey>,
    progress: &mut dyn Progress,
) -> Result<(Verified, Duration), VerifyError> {
    let started = Instant::now();
    let ring = KeyRing::load(&store.keys().await?, master);
    // Statements first, then the head: every statement read names a seq at or below the head.
    let anchors = store.anchors().await?;
    let checkpoints = store.checkpoints().await?;
    let snapshot = store.snapshot().await?;
    let (start_seq, start_hash, anchor_seq) = starting_point(&ring, &anchors)?;
    if snapshot.head_seq < start_seq - 1 {
        return Err(VerifyError::Log(format!(
            "the head of the chain (seq {}) is before the latest purge anchor (seq {}): the head row was altered",
            snapshot.head_seq,
            start_seq - 1
        )));
    }
    // Records beyond the head were not written by an append (which moves the head with them).
    if let Some(max) = snapshot.max_seq
        && max > snapshot.head_seq
    {
        let extra = store.records_from(snapshot.head_seq + 1, 1).await?;
        if let Some(r) = extra.first() {
            return Err(record_error(
                r,
                format!("it lies beyond the head of the chain (seq {}): inserted outside Habilis", snapshot.head_seq),
            ));
        }
    }
    let relevant: Vec<AuditCheckpoint> = checkpoints.into_iter().filter(|c| c.seq >= start_seq).collect();
    let signed = tokio::task::spawn_blocking(move || verify_checkpoints(&ring, &relevant, threads()))
        .await
        .map_err(|e| VerifyError::Log(format!("checking checkpoints failed: {e}")))??;
    let mut verifier = ChainVerifier::new(start_seq, &start_hash, signed, anchor_seq);
    progress.start((snapshot.head_seq - start_seq + 1).max(0) as u64);

    let threads = threads();
    let mut next_from = start_seq;
    let mut page = read_page(store, next_from, snapshot.head_seq).await?;
    while !page.is_empty() {
        next_from = page.last().map(|r| r.seq + 1).unwrap_or(next_from);
        // Hash this page on the blocking pool while the next one is read.
        let hashing = tokio::task::spawn_blocking(move || {
            let checks = chain::check_all(&page, threads);
            (page, checks)
        });
        let (hashed, next) = tokio::join!(hashing, read_page(store, next_from, snapshot.head_seq));
        let (records, checks) = hashed.map_err(|e| VerifyError::Log(format!("hashing failed: {e}")))?;
        verifier.feed(&records, &checks)?;
        progress.advance(verifier.records());
        page = next?;
    }
    let verified = verifier.finish(snapshot.head_seq, &snapshot.head_hash)?;
    Ok((verified, started.elapsed()))
}

/// A page of records from `from`, none beyond `head`.
async fn read_page(store: &dyn AuditStore, from: i64, head: i64) -> Result<Vec<StoredAuditRecord>, VerifyError> {
    if from > head {
        return Ok(Vec::new());
    }
    let mut page = store.records_from(from, PAGE_SIZE.min(head - from + 1)).await?;
    page.retain(|r| r.seq <= head);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewAuditRecord;

    fn records(n: i64) -> Vec<StoredAuditRecord> {
        let batch: Vec<NewAuditRecord> = (1..=n)
            .map(|i| NewAuditRecord {
                time: 1_700_000_000 + i,
                event: "token_issued".into(),
                outcome: "success".into(),
                client_id: Some("rp".into()),
                request_id: None,
                acr: None,
                actor: Some("acc".into()),
                subject: Some("acc".into()),
                ip: None,
                user_agent: None,
                details: "{}".into(),
            })
            .collect();
        let digests: Vec<String> = batch.iter().map(chain::digest_of).collect();
        chain::link(0, GENESIS, &batch, &digests)
    }

    fn run(
        records: &[StoredAuditRecord],
        checkpoints: BTreeMap<i64, String>,
        end: (i64, &str),
    ) -> Result<Verified, VerifyError> {
        let mut v = ChainVerifier::new(1, GENESIS, checkpoints, None);
        v.feed(records, &chain::check_all(records, 2))?;
        v.finish(end.0, end.1)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let r = records(20);
        let checkpoints = BTreeMap::from([(10, r[9].hash.clone()), (20, r[19].hash.clone())]);
        let verified = run(&r, checkpoints, (20, &r[19].hash)).unwrap();
        assert_eq!((verified.records, verified.first_seq, verified.last_seq), (20, Some(1), 20));
    }

    #[test]
    fn each_kind_of_tampering_names_its_record() {
        let r = records(20);
        let head = (20, r[19].hash.as_str());
        // Deletion.
        let mut deleted = r.clone();
        deleted.remove(6);
        let e = run(&deleted, BTreeMap::new(), head).unwrap_err();
        assert_eq!(e.seq(), Some(8), "{e}");
        assert!(e.to_string().contains("record 7 is missing"), "{e}");
        // Modification of a chained field, of a personal field.
        let mut modified = r.clone();
        modified[4].outcome = "failure".into();
        assert_eq!(run(&modified, BTreeMap::new(), head).unwrap_err().seq(), Some(5));
        let mut modified = r.clone();
        modified[11].actor = Some("someone".into());
        let e = run(&modified, BTreeMap::new(), head).unwrap_err();
        assert_eq!(e.seq(), Some(12));
        assert!(e.to_string().contains("personal"), "{e}");
        // A record replaced by a re-hashed one breaks the next link.
        let mut rehashed = r.clone();
        let x = &mut rehashed[2];
        x.event = "other".into();
        x.hash = chain::record_hash(&chain::Link {
            prev_hash: &x.prev_hash,
            seq: x.seq,
            time: x.time,
            event: &x.event,
            outcome: &x.outcome,
            client_id: x.client_id.as_deref(),
            request_id: x.request_id.as_deref(),
            acr: x.acr.as_deref(),
            personal_digest: &x.personal_digest,
        });
        let e = run(&rehashed, BTreeMap::new(), head).unwrap_err();
        assert_eq!(e.seq(), Some(4), "{e}");
        assert!(e.to_string().contains("prev_hash is not the hash of record 3"), "{e}");
        // Truncation: beyond the last record, a checkpoint or the head.
        let truncated = &r[..15];
        let e = run(truncated, BTreeMap::from([(18, r[17].hash.clone())]), (15, &r[14].hash)).unwrap_err();
        assert_eq!(e.seq(), Some(15));
        assert!(e.to_string().contains("truncation"), "{e}");
        let e = run(truncated, BTreeMap::new(), head).unwrap_err();
        assert!(e.to_string().contains("cut off"), "{e}");
        // A rewritten chain disagrees with the checkpoint.
        let e = run(&r, BTreeMap::from([(10, "f".repeat(64))]), head).unwrap_err();
        assert_eq!(e.seq(), Some(10));
        assert!(e.to_string().contains("checkpoint"), "{e}");
    }

    #[test]
    fn pseudonymised_records_need_an_erasure_record() {
        let mut r = records(3);
        r[0].actor = Some("pseudo-1".into());
        r[0].subject = Some("pseudo-1".into());
        r[0].pseudonymised_at = Some(1);
        let head = (3, r[2].hash.clone());
        let e = run(&r, BTreeMap::new(), (head.0, &head.1)).unwrap_err();
        assert_eq!(e.seq(), Some(1), "{e}");
        // With an erasure record naming the pseudonym (appended after), it verifies.
        let erasure = NewAuditRecord {
            time: 1_700_000_100,
            event: "account_deleted".into(),
            outcome: "info".into(),
            client_id: None,
            request_id: None,
            acr: None,
            actor: Some("cli".into()),
            subject: Some("pseudo-1".into()),
            ip: None,
            user_agent: None,
            details: "{}".into(),
        };
        let digest = chain::digest_of(&erasure);
        r.extend(chain::link(3, &head.1, &[erasure], &[digest]));
        let last = r[3].hash.clone();
        let verified = run(&r, BTreeMap::new(), (4, &last)).unwrap();
        assert_eq!(verified.pseudonymised, 1);
    }
}
