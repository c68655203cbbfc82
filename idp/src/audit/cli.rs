//! `habilis audit verify|export|purge`, and the durable audit service of one-shot CLI commands.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};

use super::verify::{Progress, Quiet, verify_store};
use super::{Audit, AuditContext, AuditEvent, WriterSettings};
use crate::config::Config;
use crate::keys::{KeyManager, MasterKey};
use crate::store::{AuditQuery, SharedStore};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain and its signed checkpoints: any modification, deletion, insertion or
    /// truncation of records is reported with the first bad record (seq, time, event); exits 1
    /// then. Needs the master key (checkpoint signatures).
    Verify {
        /// Check an archive written by `habilis audit purge` instead of the database.
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
    },
    /// Export records as JSON lines (one record per line, with seq, prev_hash and hash so that the
    /// export can be checked against the chain).
    Export {
        /// From this time: RFC 3339 (2025-01-31T00:00:00Z), a date (2025-01-31, UTC) or an age
        /// (30d, 12h).
        #[arg(long, value_name = "WHEN")]
        since: String,
        /// Before this time (same forms); default: now.
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write to FILE (created, mode 0600) instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only this event (e.g. card_login_refused).
        #[arg(long)]
        event: Option<String>,
        /// Only records whose actor or subject is this account id.
        #[arg(long)]
        account: Option<String>,
        /// Only records of this client.
        #[arg(long)]
        client: Option<String>,
        /// Only this outcome: success, failure, denied or info.
        #[arg(long)]
        outcome: Option<String>,
    },
    /// Retention: write the records older than --before (default: now minus audit.retention) to
    /// an archive, fsync it, then delete them, leaving a signed anchor so that the rest of the log
    /// still verifies. Check an archive with `habilis audit verify --archive FILE`.
    Purge {
        /// Purge records written before this time (RFC 3339, a date, or an age such as 3y or 1095d).
        #[arg(long, value_name = "WHEN")]
        before: Option<String>,
        /// The archive file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        archive: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

/// The audit service of a CLI command: records reach the durable log (unless `audit.durable` is
/// off). Call [`Audit::shutdown`] before exiting.
pub fn cli_audit(config: &Config, store: &SharedStore) -> Audit {
    if config.audit.durable {
        Audit::durable(store.clone(), WriterSettings::from_config(&config.audit), None)
    } else {
        Audit::default()
    }
}

/// A time as RFC 3339 (UTC), or the number if out of range.
pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Parses an RFC 3339 date-time, a date (midnight UTC) or an age before `now` (`30d`, `12h`, `3y`).
pub fn parse_when(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    if let Ok(d) = time::Date::parse(text, &time::format_description::well_known::Iso8601::DATE) {
        return Ok(d.midnight().assume_utc().unix_timestamp());
    }
    if let Ok(age) = humantime::parse_duration(text) {
        return Ok(now.saturating_sub(age.as_secs().min(i64::MAX as u64) as i64));
    }
    Err(format!("`{text}` is neither an RFC 3339 time (2025-01-31T08:00:00Z), a date (2025-01-31) nor an age (30d)"))
}

/// A terminal progress bar (indicatif), on standard error.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&mut self, verified: u64) {
        self.0.set_position(verified);
    }
}

pub async fn run(config: Config, command: &AuditCommand) -> Result<(), String> {
    crate::app::ensure_data_dir(&config).map_err(|e| e.to_string())?;
    let store = crate::store::connect(&config).await.map_err(|e| e.to_string())?;
    match command {
        AuditCommand::Verify { archive } => verify(&config, &store, archive.as_deref()).await,
        AuditCommand::Export { since, until, format: ExportFormat::Jsonl, output, event, account, client, outcome } => {
            let now = crate::unix_now();
            let since = parse_when(since, now).map_err(|e| format!("--since: {e}"))?;
            let until =
                until.as_deref().map(|u| parse_when(u, now)).transpose().map_err(|e| format!("--until: {e}"))?;
            if let Some(outcome) = outcome
                && !["success", "failure", "denied", "info"].contains(&outcome.as_str())
            {
                return Err(format!("--outcome {outcome}: expected success, failure, denied or info"));
            }
            let filter = AuditQuery {
                since: Some(since),
                until,
                event: event.clone(),
                account_id: account.clone(),
                client_id: client.clone(),
                outcome: outcome.clone(),
                ..Default::default()
            };
            let count = match output {
                Some(path) => {
                    let file = create_private(path)?;
                    let mut out = std::io::BufWriter::new(file);
                    let count =
                        super::archive::export(store.audit(), &filter, &mut out).await.map_err(|e| e.to_string())?;
                    let file = out.into_inner().map_err(|e| e.to_string())?;
                    file.sync_all().map_err(|e| e.to_string())?;
                    eprintln!("{count} record(s) exported to {}", path.display());
                    count
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut out = std::io::BufWriter::new(stdout.lock());
                    super::archive::export(store.audit(), &filter, &mut out).await.map_err(|e| e.to_string())?
                }
            };
            let audit = cli_audit(&config, &store);
            audit.record(
                AuditEvent::AuditExported {
                    actor: "cli".into(),
                    since: Some(since),
                    until,
                    filters: describe_filters(&filter),
                    records: count,
                },
                AuditContext::default(),
            );
            audit.shutdown().await;
            Ok(())
        }
        AuditCommand::Purge { before, archive } => {
            let now = crate::unix_now();
            let before = match (before, config.audit.retention) {
                (Some(before), _) => parse_when(before, now).map_err(|e| format!("--before: {e}"))?,
                (None, Some(retention)) => now - retention.as_secs() as i64,
                (None, None) => {
                    return Err("give --before (or set audit.retention): which records to purge".into());
                }
            };
            if before > now {
                return Err("--before is in the future: records not yet written cannot be purged".into());
            }
            let (keys, _) = KeyManager::bootstrap(store.clone(), &config).await.map_err(|e| e.to_string())?;
            let summary =
                super::archive::purge(&store, &keys, before, archive, now).await.map_err(|e| e.to_string())?;
            let Some(summary) = summary else {
                println!("no record written before {}: nothing to purge", format_time(before));
                return Ok(());
            };
            let audit = cli_audit(&config, &store);
            audit.record(
                AuditEvent::AuditPurged {
                    actor: "cli".into(),
                    before,
                    first_seq: summary.first_seq,
                    last_seq: summary.last_seq,
                    records: summary.records,
                    archive: archive.display().to_string(),
                    archive_sha256: summary.archive_sha256.clone(),
                },
                AuditContext::default(),
            );
            audit.shutdown().await;
            println!(
                "{} record(s) (seq {} to {}) archived to {} (SHA-256 {}) and purged; the log now verifies from seq {}",
                summary.records,
                summary.first_seq,
                summary.last_seq,
                archive.display(),
                summary.archive_sha256,
                summary.last_seq + 1
            );
            Ok(())
        }
    }
}

fn describe_filters(q: &AuditQuery) -> Option<String> {
    let parts: Vec<String> =
        [("event", &q.event), ("account_id", &q.account_id), ("client_id", &q.client_id), ("outcome", &q.outcome)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn create_private(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The master key if it can be found (never generated here); without it signatures cannot be
/// checked and verification says so.
fn master_key(config: &Config) -> Option<MasterKey> {
    match MasterKey::load_or_create(config, true) {
        Ok((key, _)) => Some(key),
        Err(e) => {
            eprintln!("warning: {e}");
            None
        }
    }
}

async fn verify(config: &Config, store: &SharedStore, archive: Option<&std::path::Path>) -> Result<(), String> {
    let master = master_key(config);
    let started = std::time::Instant::now();
    let (verified, what) = match archive {
        Some(path) => {
            let path = path.to_path_buf();
            let master = master.map(Arc::new);
            let (verified, _) =
                tokio::task::spawn_blocking(move || super::archive::verify_archive(&path, master.as_deref()))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(failure)?;
            (verified, format!("archive {}", archive.map(|p| p.display().to_string()).unwrap_or_default()))
        }
        None => {
            let mut bar;
            let mut quiet = Quiet;
            let progress: &mut dyn Progress = if std::io::stderr().is_terminal() {
                let pb = indicatif::ProgressBar::new(0);
                pb.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records ({per_sec}, {eta} left)")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar = Bar(pb);
                &mut bar
            } else {
                &mut quiet
            };
            let (verified, _) = verify_store(store.audit(), master.as_ref(), progress).await.map_err(failure)?;
            (verified, "audit log".to_string())
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 { verified.records as f64 / elapsed } else { 0.0 };
    let range = match verified.first_seq {
        Some(first) => format!("seq {first} to {}", verified.last_seq),
        None => "empty".to_string(),
    };
    println!(
        "{what} verified: {} record(s) ({range}), {} checkpoint(s){}{}, in {elapsed:.2} s ({rate:.0} records/s)",
        verified.records,
        verified.checkpoints,
        verified.anchor_seq.map(|s| format!(", from the purge anchor at seq {s}")).unwrap_or_default(),
        if verified.pseudonymised > 0 { format!(", {} pseudonymised", verified.pseudonymised) } else { String::new() },
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

fn failure(e: super::verify::VerifyError) -> String {
    format!("AUDIT LOG VERIFICATION FAILED: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        let now = 1_700_000_000;
        assert_eq!(parse_when("2023-11-14T22:13:20Z", now).unwrap(), 1_700_000_000);
        assert_eq!(parse_when("2023-11-14", now).unwrap(), 1_699_920_000);
        assert_eq!(parse_when("30d", now).unwrap(), now - 30 * 86_400);
        assert_eq!(parse_when("12h", now).unwrap(), now - 12 * 3600);
        assert!(parse_when("yesterday", now).unwrap_err().contains("neither"));
    }
}
