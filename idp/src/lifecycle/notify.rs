//! The inactivity warning: claimed in the database first (so it goes out once), then sent through
//! the account's channel with a single-use "keep my account" link, and audited either way.

use minijinja::context;

use super::{LifecycleError, Policy, audit, format_date};
use crate::app::AppState;
use crate::audit::AuditEvent;
use crate::store::{Account, AccountActivity, InactivityWarning, KeepToken};

/// Where the page of a keep-my-account link lives.
pub const KEEP_PATH: &str = "/account/keep";

/// The channel a warning can reach the owner through: `email` when the account has an address,
/// else `none` (the account is reported, and deleted at the limit all the same).
pub fn channel_of(account: &Account) -> &'static str {
    if account.email.as_deref().is_some_and(crate::cli::looks_like_email) { "email" } else { "none" }
}

/// Claims, sends and audits one warning; returns the outcome for the report (`sent`,
/// `undeliverable`, `already_sent`, `delivery_failed`).
pub async fn warn(
    state: &AppState,
    policy: &Policy,
    candidate: &AccountActivity,
    warning: &InactivityWarning,
    reminder: bool,
    actor: &str,
) -> Result<String, LifecycleError> {
    let store = state.store.lifecycle();
    let account = &candidate.account;
    if !store.claim_warning(warning).await? {
        return Ok("already_sent".into());
    }
    let undeliverable = |reason: &str| AuditEvent::InactivityWarningUndeliverable {
        account_id: account.id.clone(),
        stage: warning.stage,
        deletion_at: warning.deletion_at,
        reason: reason.to_string(),
        actor: actor.to_string(),
    };
    let Some(email) = account.email.clone().filter(|_| warning.channel == "email") else {
        tracing::warn!(
            account = %account.id,
            deletion_at = %super::format_time(warning.deletion_at),
            "lifecycle: inactive account without a reachable channel: it cannot be warned and will be deleted at the limit"
        );
        audit(state, undeliverable("no_channel"));
        return Ok("undeliverable".into());
    };
    let token = crate::cli::random_token();
    let expires_at = match policy.keep_link_validity {
        Some(validity) => warning.deletion_at.min(warning.sent_at + validity),
        None => warning.deletion_at,
    };
    store
        .insert_keep_token(&KeepToken {
            token_hash: crate::cli::sha256_hex(&token),
            account_id: account.id.clone(),
            created_at: warning.sent_at,
            expires_at,
            used_at: None,
        })
        .await?;
    let sent = match render(state, policy, candidate, warning, reminder, &token, expires_at) {
        Ok(rendered) => {
            let name = [account.given_name.as_deref(), account.family_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let mail = crate::mail::OutgoingMail::new(email, (!name.is_empty()).then_some(name), rendered);
            state.mailer.send(&mail).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match sent {
        Ok(()) => {
            audit(
                state,
                AuditEvent::InactivityWarningSent {
                    account_id: account.id.clone(),
                    stage: warning.stage,
                    deletion_at: warning.deletion_at,
                    channel: warning.channel.clone(),
                    actor: actor.to_string(),
                },
            );
            Ok("sent".into())
        }
        Err(error) => {
            // Not sent: release the claim so that the next run tries again.
            tracing::error!(account = %account.id, %error, "lifecycle: inactivity warning not delivered; retried next run");
            store.forget_warning(&account.id, warning.activity_at, warning.stage).await?;
            audit(state, undeliverable("delivery_failed"));
            Ok("delivery_failed".into())
        }
    }
}

/// The warning mail in the account's language.
fn render(
    state: &AppState,
    policy: &Policy,
    candidate: &AccountActivity,
    warning: &InactivityWarning,
    reminder: bool,
    token: &str,
    link_expires_at: i64,
) -> Result<crate::mail::RenderedMail, crate::mail::MailError> {
    let account = &candidate.account;
    let lang = account.locale.as_deref().unwrap_or("fr");
    let issuer = state.issuer_string();
    state.mail_templates.render(
        "inactivity_warning",
        lang,
        context! {
            link => format!("{issuer}{KEEP_PATH}?token={token}"),
            terms_link => format!("{issuer}{}", super::web::TERMS_PATH),
            login => account.login.clone(),
            deletion_date => format_date(warning.deletion_at, lang),
            last_activity_date => format_date(candidate.activity_at(), lang),
            link_expiry_date => format_date(link_expires_at, lang),
            inactive_days => policy.inactive_after / (24 * 3600),
            reminder => reminder,
        },
    )
}
