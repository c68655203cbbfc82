//! Getting records out of the durable log: export (JSON lines, one record per line, with `seq`,
//! `prev_hash` and `hash` so that an export can be checked against the chain) and retention
//! (archive-before-purge).
//!
//! A purge (`habilis audit purge --before DATE --archive FILE`):
//! 1. verifies the records to purge (from the latest anchor, or record 1) against their links and
//!    checkpoints while writing them to the archive — a broken log is never purged;
//! 2. signs an anchor "records up to `seq`, last hash `hash`, were archived";
//! 3. writes the archive — header, the keys, the previous anchor (where the archive starts), the
//!    new one, the checkpoints covering the records, the records, an end line — and fsyncs it;
//! 4. only then deletes, in one transaction, the records and checkpoints up to `seq` and stores
//!    the anchor: the remaining log verifies from record `seq + 1`, and the archive on its own
//!    (`habilis audit verify --archive FILE`, which needs the master key like every check of a
//!    signature).

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::chain::{self, GENESIS};
use super::checkpoint::{ANCHOR_TYP, KeyRing, anchor_claims, sign_statement, verify_anchor};
use super::verify::{ChainVerifier, PAGE_SIZE, Verified, VerifyError, threads, verify_checkpoints};
use crate::keys::{KeyManager, MasterKey};
use crate::store::{
    AuditAnchor, AuditCheckpoint, AuditKey, AuditQuery, AuditStore, SharedStore, StoreError, StoredAuditRecord,
    UnixTime,
};

/// One record as exported, archived and served by the admin API's export. `details` is the exact
/// JSON text stored (what `personal_digest` covers), so that a line can be re-hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordLine {
    pub seq: i64,
    /// Unix seconds.
    pub time: i64,
    /// `time` as RFC 3339, for people (ignored when read back).
    #[serde(default, skip_deserializing)]
    pub at: String,
    pub event: String,
    pub outcome: String,
    pub client_id: Option<String>,
    pub request_id: Option<String>,
    pub acr: Option<String>,
    pub actor: Option<String>,
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The event's own fields, as JSON text.
    pub details: String,
    pub personal_digest: String,
    pub pseudonymised_at: Option<i64>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<StoredAuditRecord> for RecordLine {
    fn from(r: StoredAuditRecord) -> Self {
        RecordLine {
            seq: r.seq,
            time: r.time,
            at: super::cli::format_time(r.time),
            event: r.event,
            outcome: r.outcome,
            client_id: r.client_id,
            request_id: r.request_id,
            acr: r.acr,
            actor: r.actor,
            subject: r.subject,
            ip: r.ip,
            user_agent: r.user_agent,
            details: r.details,
            personal_digest: r.personal_digest,
            pseudonymised_at: r.pseudonymised_at,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

impl From<RecordLine> for StoredAuditRecord {
    fn from(r: RecordLine) -> Self {
        StoredAuditRecord {
            seq: r.seq,
            time: r.time,
            event: r.event,
            outcome: r.outcome,
            client_id: r.client_id,
            request_id: r.request_id,
            acr: r.acr,
            actor: r.actor,
            subject: r.subject,
            ip: r.ip,
            user_agent: r.user_agent,
            details: r.details,
            personal_digest: r.personal_digest,
            pseudonymised_at: r.pseudonymised_at,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// Writes the records matching `filter` (its `after_seq`/`before_seq`/`limit` are ignored) as
/// JSON lines, in `seq` order, page by page. Returns how many.
pub async fn export(store: &dyn AuditStore, filter: &AuditQuery, out: &mut dyn Write) -> Result<u64, ExportError> {
    let mut query = AuditQuery { after_seq: Some(0), before_seq: None, limit: PAGE_SIZE, ..filter.clone() };
    let mut count = 0;
    loop {
        let page = store.search(&query).await?;
        let Some(last) = page.last().map(|r| r.seq) else { break };
        for record in page {
            serde_json::to_writer(&mut *out, &RecordLine::from(record)).map_err(|e| ExportError::Io(e.to_string()))?;
            out.write_all(b"\n").map_err(|e| ExportError::Io(e.to_string()))?;
            count += 1;
        }
        query.after_seq = Some(last);
    }
    out.flush().map_err(|e| ExportError::Io(e.to_string()))?;
    Ok(count)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing: {0}")]
    Io(String),
}

// ---------------------------------------------------------------------------------------------
// Archives

const FORMAT: &str = "habilis-audit-archive";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ArchiveLine {
    Header {
        format: String,
        version: u32,
        first_seq: i64,
        last_seq: i64,
        /// The `prev_hash` of record `first_seq` (genesis, or the previous anchor's hash).
        start_hash: String,
        created_at: i64,
    },
    Key {
        kid: String,
        alg: String,
        public_jwk: String,
        /// Base64 of the sealed private key (opens only under the master key).
        private_sealed: String,
        created_at: i64,
    },
    Anchor {
        seq: i64,
        hash: String,
        time: i64,
        records: i64,
        kid: String,
        jws: String,
    },
    Checkpoint {
        seq: i64,
        hash: String,
        time: i64,
        kid: String,
        jws: String,
    },
    /// Boxed: a record line is far larger than the other lines.
    Record(Box<RecordLine>),
    End {
        records: u64,
        last_hash: String,
    },
}

impl ArchiveLine {
    fn anchor(a: &AuditAnchor) -> ArchiveLine {
        ArchiveLine::Anchor {
            seq: a.seq,
            hash: a.hash.clone(),
            time: a.time,
            records: a.records,
            kid: a.kid.clone(),
            jws: a.jws.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the records to purge do not verify, nothing was purged: {0}")]
    Verify(#[from] VerifyError),
    #[error("signing the anchor: {0}")]
    Sign(#[from] super::checkpoint::CheckpointError),
    #[error("archive {path}: {error}")]
    Archive { path: String, error: String },
}

/// What a purge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeSummary {
    pub records: u64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub archive_sha256: String,
}

/// A writer that hashes what goes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Archives then deletes the records written before `before` (see the module documentation).
/// `None` when there is nothing to purge. The archive file must not exist.
pub async fn purge(
    store: &SharedStore,
    keys: &KeyManager,
    before: UnixTime,
    archive: &Path,
    now: UnixTime,
) -> Result<Option<PurgeSummary>, PurgeError> {
    let audit = store.audit();
    let Some(last_seq) = audit.last_seq_before(before).await? else { return Ok(None) };
    let master = keys.master_key();
    let anchors = audit.anchors().await?;
    let previous = anchors.last().cloned();
    let (first_seq, start_hash) = match &previous {
        Some(a) => (a.seq + 1, a.hash.clone()),
        None => (1, GENESIS.to_string()),
    };
    if last_seq < first_seq {
        return Ok(None);
    }
    let last =
        audit.records_from(last_seq, 1).await?.into_iter().next().filter(|r| r.seq == last_seq).ok_or_else(|| {
            PurgeError::Verify(VerifyError::Log(format!("record {last_seq} vanished during the purge")))
        })?;

    // Sign the anchor first: the archive carries it, and its key must be in audit_keys.
    let records = last_seq - first_seq + 1;
    let claims = anchor_claims(last_seq, &last.hash, now, records);
    let (jws, kid) = sign_statement(store, keys, &mut HashSet::new(), ANCHOR_TYP, &claims, now).await?;
    let mut anchor = AuditAnchor {
        seq: last_seq,
        hash: last.hash.clone(),
        time: now,
        records,
        archive_sha256: String::new(),
        kid,
        jws,
    };

    let ring = KeyRing::load(&audit.keys().await?, Some(&master));
    if let Some(previous) = &previous {
        verify_anchor(&ring, previous).map_err(|problem| {
            VerifyError::Log(format!("the purge anchor at seq {} is not valid: {problem}", previous.seq))
        })?;
    }
    let covering: Vec<AuditCheckpoint> =
        audit.checkpoints().await?.into_iter().filter(|c| (first_seq..=last_seq).contains(&c.seq)).collect();
    let signed = verify_checkpoints(&ring, &covering, threads())?;

    let archive_error = |error: String| PurgeError::Archive { path: archive.display().to_string(), error };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(archive)
        .map_err(|e| archive_error(format!("cannot create it (it must not exist): {e}")))?;
    let written = write_archive(
        audit,
        file,
        ArchiveParts {
            first_seq,
            last_seq,
            start_hash: &start_hash,
            keys: &audit.keys().await?,
            previous: previous.as_ref(),
            anchor: &anchor,
            checkpoints: &covering,
            signed,
            now,
        },
    )
    .await;
    let sha256 = match written {
        Ok(sha256) => sha256,
        Err(e) => {
            // Nothing was deleted; a partial archive would only mislead.
            let _ = std::fs::remove_file(archive);
            return Err(e.into_purge(archive));
        }
    };
    if let Some(dir) = archive.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The directory entry too must survive a crash before the records are deleted.
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    anchor.archive_sha256 = sha256.clone();
    let deleted = audit.purge(&anchor).await?;
    Ok(Some(PurgeSummary { records: deleted, first_seq, last_seq, archive_sha256: sha256 }))
}

struct ArchiveParts<'a> {
    first_seq: i64,
    last_seq: i64,
    start_hash: &'a str,
    keys: &'a [AuditKey],
    previous: Option<&'a AuditAnchor>,
    anchor: &'a AuditAnchor,
    checkpoints: &'a [AuditCheckpoint],
    signed: BTreeMap<i64, String>,
    now: UnixTime,
}

enum WriteError {
    Io(String),
    Verify(VerifyError),
}

impl WriteError {
    fn into_purge(self, archive: &Path) -> PurgeError {
        match self {
            WriteError::Io(error) => PurgeError::Archive { path: archive.display().to_string(), error },
            WriteError::Verify(e) => PurgeError::Verify(e),
        }
    }
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Verify(VerifyError::Store(e))
    }
}

/// Writes and fsyncs the archive, verifying the records on the way; returns its SHA-256 (hex).
async fn write_archive(audit: &dyn AuditStore, file: std::fs::File, p: ArchiveParts<'_>) -> Result<String, WriteError> {
    let mut out = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new() };
    let line = |out: &mut HashingWriter<BufWriter<std::fs::File>>, l: &ArchiveLine| -> Result<(), WriteError> {
        serde_json::to_writer(&mut *out, l).map_err(|e| WriteError::Io(e.to_string()))?;
        out.write_all(b"\n").map_err(|e| WriteError::Io(e.to_string()))
    };
    line(
        &mut out,
        &ArchiveLine::Header {
            format: FORMAT.into(),
            version: VERSION,
            first_seq: p.first_seq,
            last_seq: p.last_seq,
            start_hash: p.start_hash.to_string(),
            created_at: p.now,
        },
    )?;
    for k in p.keys {
        line(
            &mut out,
            &ArchiveLine::Key {
                kid: k.kid.clone(),
                alg: k.alg.clone(),
                public_jwk: k.public_jwk.clone(),
                private_sealed: STANDARD.encode(&k.private_sealed),
                created_at: k.created_at,
            },
        )?;
    }
    if let Some(previous) = p.previous {
        line(&mut out, &ArchiveLine::anchor(previous))?;
    }
    line(&mut out, &ArchiveLine::anchor(p.anchor))?;
    for c in p.checkpoints {
        line(
            &mut out,
            &ArchiveLine::Checkpoint {
                seq: c.seq,
                hash: c.hash.clone(),
                time: c.time,
                kid: c.kid.clone(),
                jws: c.jws.clone(),
            },
        )?;
    }
    let mut verifier = ChainVerifier::new(p.first_seq, p.start_hash, p.signed, p.previous.map(|a| a.seq));
    let mut from = p.first_seq;
    while from <= p.last_seq {
        let mut page = audit.records_from(from, PAGE_SIZE.min(p.last_seq - from + 1)).await?;
        page.retain(|r| r.seq <= p.last_seq);
        let Some(last) = page.last().map(|r| r.seq) else { break };
        let checks = chain::check_all(&page, threads());
        verifier.feed(&page, &checks).map_err(WriteError::Verify)?;
        for record in page {
            line(&mut out, &ArchiveLine::Record(Box::new(record.into())))?;
        }
        from = last + 1;
    }
    let records = verifier.records();
    verifier.finish_archive(p.last_seq, &p.anchor.hash).map_err(WriteError::Verify)?;
    line(&mut out, &ArchiveLine::End { records, last_hash: p.anchor.hash.clone() })?;
    out.flush().map_err(|e| WriteError::Io(e.to_string()))?;
    let HashingWriter { inner, hasher } = out;
    let file = inner.into_inner().map_err(|e| WriteError::Io(e.to_string()))?;
    file.sync_all().map_err(|e| WriteError::Io(format!("fsync: {e}")))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Reads an archive line by line, counting lines for error messages.
struct LineReader<R: BufRead> {
    lines: std::io::Lines<R>,
    number: u64,
}

impl<R: BufRead> LineReader<R> {
    fn next(&mut self) -> Result<Option<ArchiveLine>, VerifyError> {
        let Some(text) = self.lines.next() else { return Ok(None) };
        self.number += 1;
        let text = text.map_err(|e| VerifyError::Archive(e.to_string()))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| VerifyError::Archive(format!("line {} is not an archive line: {e}", self.number)))
    }
}

/// Verifies an archive on its own: its header, that its keys are Habilis keys (under `master`),
/// its anchors' and checkpoints' signatures, and the chain of its records from the start hash to
/// the anchor at its end.
pub fn verify_archive(path: &Path, master: Option<&MasterKey>) -> Result<(Verified, u64), VerifyError> {
    let file = std::fs::File::open(path).map_err(|e| VerifyError::Archive(format!("{}: {e}", path.display())))?;
    let mut reader = LineReader { lines: BufReader::with_capacity(1 << 20, file).lines(), number: 0 };
    let mut next = || reader.next();
    let Some(ArchiveLine::Header { format, version, first_seq, last_seq, start_hash, .. }) = next()? else {
        return Err(VerifyError::Archive("the first line is not an archive header".into()));
    };
    if format != FORMAT || version != VERSION {
        return Err(VerifyError::Archive(format!("unknown archive format {format} version {version}")));
    }
    let mut keys = Vec::new();
    let mut anchors = Vec::new();
    let mut checkpoints = Vec::new();
    let mut pending = None;
    while let Some(line) = next()? {
        match line {
            ArchiveLine::Key { kid, alg, public_jwk, private_sealed, created_at } => keys.push(AuditKey {
                kid,
                alg,
                public_jwk,
                private_sealed: STANDARD
                    .decode(private_sealed)
                    .map_err(|_| VerifyError::Archive("a key's sealed part is not base64".into()))?,
                created_at,
            }),
            ArchiveLine::Anchor { seq, hash, time, records, kid, jws } => {
                anchors.push(AuditAnchor { seq, hash, time, records, archive_sha256: String::new(), kid, jws })
            }
            ArchiveLine::Checkpoint { seq, hash, time, kid, jws } => {
                checkpoints.push(AuditCheckpoint { seq, hash, time, kid, jws })
            }
            other => {
                pending = Some(other);
                break;
            }
        }
    }
    let ring = KeyRing::load(&keys, master);
    let verify = |a: &AuditAnchor| {
        verify_anchor(&ring, a)
            .map_err(|problem| VerifyError::Log(format!("the anchor at seq {} is not valid: {problem}", a.seq)))
    };
    let expected_start = if first_seq == 1 {
        GENESIS.to_string()
    } else {
        let previous = anchors.iter().find(|a| a.seq == first_seq - 1).ok_or_else(|| {
            VerifyError::Log(format!("no anchor at seq {} says where the archive starts", first_seq - 1))
        })?;
        verify(previous)?;
        previous.hash.clone()
    };
    if start_hash != expected_start {
        return Err(VerifyError::Log("the header's start hash is not the one the previous anchor signed".into()));
    }
    let end = anchors
        .iter()
        .find(|a| a.seq == last_seq)
        .ok_or_else(|| VerifyError::Log(format!("no anchor at seq {last_seq} closes the archive")))?;
    verify(end)?;
    let signed = verify_checkpoints(&ring, &checkpoints, threads())?;
    let mut verifier = ChainVerifier::new(first_seq, &expected_start, signed, (first_seq > 1).then_some(first_seq - 1));
    let mut page: Vec<StoredAuditRecord> = Vec::with_capacity(PAGE_SIZE as usize);
    let mut end_line = None;
    let mut line = pending;
    loop {
        match line {
            Some(ArchiveLine::Record(record)) => {
                page.push((*record).into());
                if page.len() as i64 >= PAGE_SIZE {
                    verifier.feed(&page, &chain::check_all(&page, threads()))?;
                    page.clear();
                }
            }
            Some(ArchiveLine::End { records, last_hash }) => {
                end_line = Some((records, last_hash));
                break;
            }
            Some(_) => return Err(VerifyError::Archive("a key, anchor or checkpoint line among the records".into())),
            None => break,
        }
        line = next()?;
    }
    verifier.feed(&page, &chain::check_all(&page, threads()))?;
    let Some((count, last_hash)) = end_line else {
        return Err(VerifyError::Archive("the archive has no end line: it is incomplete".into()));
    };
    if count != verifier.records() || last_hash != end.hash {
        return Err(VerifyError::Archive("the end line does not match the records".into()));
    }
    let records = verifier.records();
    Ok((verifier.finish_archive(last_seq, &end.hash)?, records))
}
