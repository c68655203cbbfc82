//! `habilis lifecycle run`: the inactive-account job, once, from the command line (cron, tests,
//! planning with `--dry-run` and `--now`).

use clap::{Args, Subcommand};

use super::{RunOptions, RunReport, format_time};
use crate::app::AppState;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Run the inactive-account job once: warn the accounts nearing the inactivity limit (mail
    /// with a "keep my account" link) and delete those past it, as `habilis serve` does every
    /// lifecycle.run_every. Runs on one instance at a time: when a server or another run holds the
    /// job's lease, it says so and does nothing. Prints what it did (account, action, dates).
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Only show what would be done: no mail, no deletion, nothing written.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide as if it were this time (RFC 3339, e.g. 2027-03-01T00:00:00Z): a planning and testing
    /// aid (with --dry-run: "what happens on that day"). Dates announced in mails follow it;
    /// records written carry the real time.
    #[arg(long, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<i64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The application state of a one-shot command: the server's services on the same storage.
pub async fn state(config: Config) -> Result<AppState, String> {
    crate::app::ensure_data_dir(&config).map_err(|e| e.to_string())?;
    crate::app::build_state(config).await.map_err(|e| e.to_string())
}

/// Parses `--now`.
pub fn parse_now(raw: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(raw.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("not an RFC 3339 time such as 2027-03-01T00:00:00Z ({e})"))
}

/// Runs the command; `Err` carries the message to print.
pub async fn run(config: Config, command: &LifecycleCommand) -> Result<(), String> {
    let LifecycleCommand::Run(args) = command;
    let now = args.now.unwrap_or_else(crate::unix_now);
    let state = state(config).await?;
    let options = RunOptions { now, dry_run: args.dry_run, actor: "cli".into() };
    let result = super::run(&state, &options).await;
    // What the run recorded must reach the durable log before the process ends.
    crate::person::audit_trail::flush(&state).await;
    let report = result.map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", render(&report));
    }
    // A cron job or a supervisor must see that something is left to retry.
    let failed =
        report.items.iter().filter(|i| i.outcome.starts_with("failed") || i.outcome == "delivery_failed").count();
    if failed > 0 {
        return Err(format!("{failed} account(s) could not be warned or deleted; they are retried at the next run"));
    }
    Ok(())
}

/// The report as a table.
pub fn render(report: &RunReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mode = if report.dry_run { " (dry run: nothing changed)" } else { "" };
    let _ = writeln!(out, "lifecycle run at {}{mode}", format_time(report.now));
    if let Some(reason) = &report.skipped {
        let _ = writeln!(out, "skipped: {reason}");
        return out;
    }
    if report.items.is_empty() {
        let _ = writeln!(out, "no account to warn or delete");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<36}  {:<30}  {:<6}  {:<20}  {:<20}  {:<5}  {:<7}  OUTCOME",
        "ACCOUNT", "LOGIN", "ACTION", "LAST ACTIVITY", "DELETION", "STAGE", "CHANNEL"
    );
    for item in &report.items {
        let _ = writeln!(
            out,
            "{:<36}  {:<30}  {:<6}  {:<20}  {:<20}  {:<5}  {:<7}  {}",
            item.account_id,
            item.login,
            item.action,
            format_time(item.activity_at),
            format_time(item.deletion_at),
            item.stage.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            item.channel.as_deref().unwrap_or("-"),
            item.outcome
        );
    }
    let _ = writeln!(out, "{} to warn, {} to delete", report.count("warn"), report.count("delete"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_an_rfc3339_time() {
        assert_eq!(parse_now("2027-03-01T00:00:00Z"), Ok(1_803_859_200));
        assert_eq!(parse_now(" 2027-03-01T01:00:00+01:00 "), Ok(1_803_859_200));
        assert!(parse_now("2027-03-01").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn the_report_names_each_account_and_what_was_done() {
        let report = RunReport {
            now: 0,
            dry_run: true,
            skipped: None,
            items: vec![super::super::ReportItem {
                account_id: "id-1".into(),
                login: "jean@example.org".into(),
                action: "warn",
                activity_at: 0,
                deletion_at: 86_400,
                stage: Some(1),
                channel: Some("email".into()),
                outcome: "planned".into(),
            }],
        };
        let text = render(&report);
        assert!(text.contains("dry run: nothing changed"), "{text}");
        let row: Vec<&str> = text.lines().find(|l| l.starts_with("id-1")).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "id-1",
                "jean@example.org",
                "warn",
                "1970-01-01T00:00:00Z",
                "1970-01-02T00:00:00Z",
                "1",
                "email",
                "planned"
            ]
        );
        let skipped = RunReport { skipped: Some("another run holds the lifecycle lease".into()), ..report };
        assert!(render(&skipped).contains("skipped: another run"));
    }
}
