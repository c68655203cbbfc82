//! Audit log generator for `bench/audit-verify.sh`: appends RECORDS hash-chained records to the
//! durable log of the database named by the HABILIS_* environment (an embedded SQLite data dir or
//! a PostgreSQL schema), through the store's own `append` (so the chain is exactly what the writer
//! would have produced), in batches, with a signed checkpoint every CHECKPOINT_EVERY records and
//! one at the end, as a server would leave them.
//!
//! auditgen RECORDS [BATCH]
//!
//! The records imitate a busy server's traffic: user token issuance, refresh, and client tokens,
//! with a request id, address and user agent each (realistic sizes for the hashing and the rows).
//! Progress goes to standard error as a plain line every twentieth of the work (no terminal
//! tricks: the output is often a log file); the summary goes to standard output.

use std::io::Write;
use std::time::Instant;

use habilis_idp::audit::checkpoint::Checkpointer;
use habilis_idp::audit::{AuditContext, AuditEvent, AuditRecord};
use habilis_idp::store::NewAuditRecord;

/// Records per `append` (one transaction each).
const DEFAULT_BATCH: usize = 10_000;
/// A server checkpoints once a minute when the log grew: at a few thousand events a second, that
/// is a few hundred thousand records apart. One per million keeps their count (and signature
/// checks) of the same order.
const CHECKPOINT_EVERY: u64 = 1_000_000;
/// Progress lines: at most about twenty, none closer than this.
const MIN_PROGRESS_STEP: u64 = 100_000;

/// Record `i` of the generated log, written at `time`.
fn record(i: u64, time: i64) -> NewAuditRecord {
    let account = format!("acc_{:016x}", i % 50_000);
    let grant = format!("grant_{:016x}", i / 3);
    let event = match i % 4 {
        0 | 1 => AuditEvent::TokenIssued {
            grant_type: "authorization_code".into(),
            account_id: Some(account.clone()),
            grant_id: Some(grant),
        },
        2 => AuditEvent::TokenRefreshed { account_id: account.clone(), grant_id: grant },
        _ => AuditEvent::TokenIssued { grant_type: "client_credentials".into(), account_id: None, grant_id: None },
    };
    let context = AuditContext {
        ip: Some(format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0".into()),
        request_id: Some(format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))),
        client_id: Some(format!("client-{}", i % 40)),
        acr: (i % 4 != 3).then(|| "eidas1".to_string()),
    };
    AuditRecord { time, event, context }.into_new()
}

fn usage() -> ! {
    eprintln!("usage: auditgen RECORDS [BATCH]   (database from the HABILIS_* environment)");
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or_else(|| usage());
    let batch_size: usize = match args.get(2) {
        Some(a) => a.parse().unwrap_or_else(|_| usage()),
        None => DEFAULT_BATCH,
    };
    let config = habilis_idp::config::Config::load_from_process(None).expect("the HABILIS_* configuration");
    // The state opens the database (migrating it) and loads or creates the signing keys the
    // checkpoints are signed with, exactly as the server would.
    let state = habilis_idp::app::build_state(config).await.expect("the application state");
    let store = state.store.clone();
    let mut checkpointer = Checkpointer::new(store.clone(), state.keys.clone());
    let already = store.audit().snapshot().await.expect("the head of the audit log").head_seq;

    // Times spread over the last year, one record every few milliseconds, ending now.
    let now = habilis_idp::unix_now();
    let first_time = now - 365 * 24 * 3600;
    let time_of = move |i: u64| first_time + ((i as u128 * 365 * 24 * 3600) / total.max(1) as u128) as i64;

    // Records are built on a blocking thread while the previous batch is appended.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewAuditRecord>>(2);
    let builder = tokio::task::spawn_blocking(move || {
        let mut i = 0;
        while i < total {
            let end = (i + batch_size as u64).min(total);
            let batch: Vec<NewAuditRecord> = (i..end).map(|j| record(already as u64 + j, time_of(j))).collect();
            if tx.blocking_send(batch).is_err() {
                return;
            }
            i = end;
        }
    });

    let started = Instant::now();
    let mut written: u64 = 0;
    let progress_step = (total / 20).max(MIN_PROGRESS_STEP);
    let mut next_progress = progress_step;
    let mut next_checkpoint = CHECKPOINT_EVERY;
    let mut checkpoints = 0;
    while let Some(batch) = rx.recv().await {
        store.audit().append(&batch).await.expect("appending a batch");
        written += batch.len() as u64;
        if written >= next_checkpoint {
            if checkpointer.checkpoint(now).await.expect("a checkpoint").is_some() {
                checkpoints += 1;
            }
            next_checkpoint += CHECKPOINT_EVERY;
        }
        if written >= next_progress || written == total {
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "generated {written}/{total} records in {elapsed:.0} s ({:.0} records/s)",
                written as f64 / elapsed.max(1e-9)
            );
            next_progress = written + progress_step - written % progress_step;
        }
    }
    builder.await.expect("the record builder");
    if checkpointer.checkpoint(now).await.expect("the final checkpoint").is_some() {
        checkpoints += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let head = store.audit().snapshot().await.expect("the head of the audit log");
    println!(
        "generated {written} records (seq {} to {}) and {checkpoints} checkpoint(s) in {elapsed:.1} s \
         ({:.0} records/s)",
        already + 1,
        head.head_seq,
        written as f64 / elapsed.max(1e-9)
    );
    let _ = std::io::stdout().flush();
}
