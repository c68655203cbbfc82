//! The hash chain of the audit log: what each record commits to. Pure functions, shared by the
//! store (which links a batch to the head under a lock), the verifier and archive checks.
//!
//! - `personal_digest = SHA-256(JSON [actor, subject, ip, user_agent, details])`: the personal
//!   fields, kept out of the chain itself so that erasing a person (replacing those fields by a
//!   pseudonym) leaves the chain intact.
//! - `hash = SHA-256(JSON ["habilis-audit-v1", prev_hash, seq, time, event, outcome, client_id,
//!   request_id, acr, personal_digest])`.
//!
//! Both are JSON arrays of strings, nulls and integers as serde_json writes them: an unambiguous
//! encoding (every string is quoted and escaped, `null` differs from `"null"`), and the same
//! bytes on every platform. The leading version tag lets a later encoding coexist with this one.
//! `details` is hashed as the exact text stored, so it needs no canonical form.

use sha2::{Digest, Sha256};

use crate::store::{NewAuditRecord, StoredAuditRecord};

/// The `prev_hash` of record 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Tags the encoding of [`record_hash`].
const VERSION: &str = "habilis-audit-v1";

fn sha256_hex_of_json<T: serde::Serialize>(value: &T, buffer: &mut Vec<u8>) -> String {
    buffer.clear();
    // Serialising strings, integers and options into a Vec cannot fail.
    serde_json::to_writer(&mut *buffer, value).expect("JSON of strings and integers");
    lower_hex(&Sha256::digest(buffer.as_slice()).into())
}

/// A SHA-256 digest in lower-case hex (as `hex::encode`, without its per-character iteration: the
/// writer and the verifier do this twice per record).
fn lower_hex(digest: &[u8; 32]) -> String {
    let mut text = [0u8; 64];
    // 64 bytes for 32: the sizes match, so this cannot fail.
    hex::encode_to_slice(digest, &mut text).expect("64 hex digits for 32 bytes");
    std::str::from_utf8(&text).expect("hex digits are ASCII").to_owned()
}

/// SHA-256 (hex) of the personal fields of a record.
pub fn personal_digest(
    actor: Option<&str>,
    subject: Option<&str>,
    ip: Option<&str>,
    user_agent: Option<&str>,
    details: &str,
) -> String {
    personal_digest_with(&mut Vec::with_capacity(512), actor, subject, ip, user_agent, details)
}

fn personal_digest_with(
    buffer: &mut Vec<u8>,
    actor: Option<&str>,
    subject: Option<&str>,
    ip: Option<&str>,
    user_agent: Option<&str>,
    details: &str,
) -> String {
    sha256_hex_of_json(&(actor, subject, ip, user_agent, details), buffer)
}

/// The fields a record's hash commits to.
#[derive(Clone, Copy, Debug)]
pub struct Link<'a> {
    pub prev_hash: &'a str,
    pub seq: i64,
    pub time: i64,
    pub event: &'a str,
    pub outcome: &'a str,
    pub client_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub acr: Option<&'a str>,
    pub personal_digest: &'a str,
}

/// SHA-256 (hex) of a record's chained fields.
pub fn record_hash(link: &Link<'_>) -> String {
    record_hash_with(&mut Vec::with_capacity(512), link)
}

fn record_hash_with(buffer: &mut Vec<u8>, l: &Link<'_>) -> String {
    sha256_hex_of_json(
        &(VERSION, l.prev_hash, l.seq, l.time, l.event, l.outcome, l.client_id, l.request_id, l.acr, l.personal_digest),
        buffer,
    )
}

/// The personal digest of a record to append (computed before the head is locked: it does not
/// depend on the chain).
pub fn digest_of(record: &NewAuditRecord) -> String {
    personal_digest(
        record.actor.as_deref(),
        record.subject.as_deref(),
        record.ip.as_deref(),
        record.user_agent.as_deref(),
        &record.details,
    )
}

/// Links `batch` (with its personal digests, in the same order) after the head `(seq, hash)`:
/// seq `head_seq + 1`, `+ 2`…, each committing to the previous one.
pub fn link(head_seq: i64, head_hash: &str, batch: &[NewAuditRecord], digests: &[String]) -> Vec<StoredAuditRecord> {
    let mut buffer = Vec::with_capacity(512);
    let mut prev_hash = head_hash.to_string();
    let mut stored = Vec::with_capacity(batch.len());
    for (i, (record, digest)) in batch.iter().zip(digests).enumerate() {
        let seq = head_seq + 1 + i as i64;
        let hash = record_hash_with(
            &mut buffer,
            &Link {
                prev_hash: &prev_hash,
                seq,
                time: record.time,
                event: &record.event,
                outcome: &record.outcome,
                client_id: record.client_id.as_deref(),
                request_id: record.request_id.as_deref(),
                acr: record.acr.as_deref(),
                personal_digest: digest,
            },
        );
        stored.push(StoredAuditRecord {
            seq,
            time: record.time,
            event: record.event.clone(),
            outcome: record.outcome.clone(),
            client_id: record.client_id.clone(),
            request_id: record.request_id.clone(),
            acr: record.acr.clone(),
            actor: record.actor.clone(),
            subject: record.subject.clone(),
            ip: record.ip.clone(),
            user_agent: record.user_agent.clone(),
            details: record.details.clone(),
            personal_digest: digest.clone(),
            pseudonymised_at: None,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    stored
}

/// What a stored record's own content says, independently of its neighbours: the part of
/// verification that can run in parallel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordCheck {
    /// `Some(false)` when the personal fields no longer match `personal_digest`; `None` for a
    /// pseudonymised record (its personal fields were replaced on purpose).
    pub personal_ok: Option<bool>,
    /// Whether `hash` is the hash of the record's fields and `prev_hash`.
    pub hash_ok: bool,
}

/// Recomputes a stored record's digest (unless pseudonymised) and hash.
pub fn check(record: &StoredAuditRecord) -> RecordCheck {
    check_with(&mut Vec::with_capacity(512), record)
}

fn check_with(buffer: &mut Vec<u8>, r: &StoredAuditRecord) -> RecordCheck {
    let personal_ok = match r.pseudonymised_at {
        Some(_) => None,
        None => Some(
            personal_digest_with(
                buffer,
                r.actor.as_deref(),
                r.subject.as_deref(),
                r.ip.as_deref(),
                r.user_agent.as_deref(),
                &r.details,
            ) == r.personal_digest,
        ),
    };
    let hash = record_hash_with(
        buffer,
        &Link {
            prev_hash: &r.prev_hash,
            seq: r.seq,
            time: r.time,
            event: &r.event,
            outcome: &r.outcome,
            client_id: r.client_id.as_deref(),
            request_id: r.request_id.as_deref(),
            acr: r.acr.as_deref(),
            personal_digest: &r.personal_digest,
        },
    );
    RecordCheck { personal_ok, hash_ok: hash == r.hash }
}

/// [`check`] of every record, split across `threads` threads (hashing is independent per record;
/// only the linkage, checked afterwards, is sequential).
pub fn check_all(records: &[StoredAuditRecord], threads: usize) -> Vec<RecordCheck> {
    let threads = threads.clamp(1, 64);
    if threads == 1 || records.len() < 256 {
        let mut buffer = Vec::with_capacity(512);
        return records.iter().map(|r| check_with(&mut buffer, r)).collect();
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut buffer = Vec::with_capacity(512);
                    part.iter().map(|r| check_with(&mut buffer, r)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a hashing thread panicked")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_record(n: i64) -> NewAuditRecord {
        NewAuditRecord {
            time: 1_700_000_000 + n,
            event: "card_login_succeeded".into(),
            outcome: "success".into(),
            client_id: Some("rp".into()),
            request_id: Some(format!("req-{n}")),
            acr: Some("eidas3".into()),
            actor: Some("acc-1".into()),
            subject: Some("acc-1".into()),
            ip: Some("192.0.2.1".into()),
            user_agent: Some("test".into()),
            details: format!("{{\"n\":{n}}}"),
        }
    }

    fn chain(n: i64) -> Vec<StoredAuditRecord> {
        let batch: Vec<_> = (1..=n).map(new_record).collect();
        let digests: Vec<_> = batch.iter().map(digest_of).collect();
        link(0, GENESIS, &batch, &digests)
    }

    #[test]
    fn links_number_and_chain_records_from_the_head() {
        let records = chain(3);
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(records[0].prev_hash, GENESIS);
        assert_eq!(records[1].prev_hash, records[0].hash);
        assert_eq!(records[2].prev_hash, records[1].hash);
        for r in &records {
            assert_eq!(check(r), RecordCheck { personal_ok: Some(true), hash_ok: true });
            assert_eq!(r.hash.len(), 64);
        }
        // A second batch continues the first.
        let more = link(3, &records[2].hash, &[new_record(4)], &[digest_of(&new_record(4))]);
        assert_eq!((more[0].seq, more[0].prev_hash.as_str()), (4, records[2].hash.as_str()));
    }

    #[test]
    fn the_encoding_is_fixed() {
        // A known answer: changing the encoding breaks every existing log, so it must be deliberate.
        assert_eq!(
            personal_digest(Some("a"), None, None, None, "{}"),
            hex::encode(Sha256::digest(br#"["a",null,null,null,"{}"]"#))
        );
        let link = Link {
            prev_hash: GENESIS,
            seq: 1,
            time: 2,
            event: "e",
            outcome: "info",
            client_id: None,
            request_id: Some("r"),
            acr: None,
            personal_digest: "d",
        };
        let expected = format!(r#"["habilis-audit-v1","{GENESIS}",1,2,"e","info",null,"r",null,"d"]"#);
        assert_eq!(record_hash(&link), hex::encode(Sha256::digest(expected.as_bytes())));
    }

    #[test]
    fn every_chained_field_and_every_personal_field_counts() {
        let original = chain(1).remove(0);
        let chained: Vec<fn(&mut StoredAuditRecord)> = vec![
            |r| r.seq += 1,
            |r| r.time += 1,
            |r| r.event = "other".into(),
            |r| r.outcome = "failure".into(),
            |r| r.client_id = None,
            |r| r.request_id = Some("x".into()),
            |r| r.acr = Some("null".into()),
            |r| r.prev_hash = "1".repeat(64),
            |r| r.personal_digest = "2".repeat(64),
        ];
        for (i, change) in chained.iter().enumerate() {
            let mut r = original.clone();
            change(&mut r);
            assert!(!check(&r).hash_ok, "chained field #{i}");
        }
        let personal: Vec<fn(&mut StoredAuditRecord)> = vec![
            |r| r.actor = Some("someone else".into()),
            |r| r.subject = None,
            |r| r.ip = Some("198.51.100.7".into()),
            |r| r.user_agent = None,
            |r| r.details = "{\"n\":2}".into(),
        ];
        for (i, change) in personal.iter().enumerate() {
            let mut r = original.clone();
            change(&mut r);
            assert_eq!(check(&r), RecordCheck { personal_ok: Some(false), hash_ok: true }, "personal field #{i}");
        }
        // Null and the string "null" differ; so do field boundaries.
        assert_ne!(personal_digest(None, None, None, None, ""), personal_digest(Some("null"), None, None, None, ""));
        assert_ne!(
            personal_digest(Some("ab"), Some("c"), None, None, ""),
            personal_digest(Some("a"), Some("bc"), None, None, "")
        );
    }

    #[test]
    fn pseudonymised_records_keep_their_hash() {
        let mut r = chain(1).remove(0);
        r.actor = Some("pseudonym".into());
        r.subject = Some("pseudonym".into());
        r.ip = None;
        r.pseudonymised_at = Some(1);
        assert_eq!(check(&r), RecordCheck { personal_ok: None, hash_ok: true });
    }

    #[test]
    fn parallel_checks_agree_with_sequential_ones() {
        let mut records = chain(1000);
        records[517].event = "tampered".into();
        records[3].details = "{}".into();
        let sequential: Vec<_> = records.iter().map(check).collect();
        assert_eq!(check_all(&records, 4), sequential);
        assert_eq!(check_all(&records, 1), sequential);
        assert!(!sequential[517].hash_ok);
        assert_eq!(sequential[3].personal_ok, Some(false));
    }
}
