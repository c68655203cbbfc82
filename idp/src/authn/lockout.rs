//! The lockout of a login name seen from outside the login pages: whether it is locked, lifting
//! the lock (an administrator, through the admin API, the console or `habilis user unlock`), and
//! telling the holder when their login gets locked.
//!
//! A login name is locked at two scopes (`authn::login`): its passwords and its second-factor
//! codes. Card and security-key logins are never locked by them: someone who knows a login can
//! lock its password step, not the holder's card or key. Both the lock and its lifting are durable
//! (`ephemeral::durable`): the database is the authority for locks, so an unlock by the CLI, which
//! does not share the server's memory, takes effect at the server's next check.

use crate::app::AppState;
use crate::authn::login::{code_scope, login_scope};
use crate::authn::throttle::{Throttle, ThrottleError};
use crate::ephemeral::EphemeralStore;
use crate::store::Account;

/// Until when `login` is locked (the later of its two scopes), if it is.
pub async fn locked_until(ephemeral: &dyn EphemeralStore, login: &str, now: i64) -> Result<Option<i64>, ThrottleError> {
    let mut until = None;
    for scope in [login_scope(login), code_scope(login)] {
        match Throttle::default().check(ephemeral, &scope, now).await {
            Ok(()) => {}
            Err(ThrottleError::Locked { until: this }) => until = until.max(Some(this)),
            Err(e) => return Err(e),
        }
    }
    Ok(until)
}

/// Lifts both locks of `login` and forgets its failure counts. Returns until when it was locked,
/// if it was (unlocking an unlocked login is not an error: the result says so).
pub async fn unlock(ephemeral: &dyn EphemeralStore, login: &str, now: i64) -> Result<Option<i64>, ThrottleError> {
    let mut until = None;
    for scope in [login_scope(login), code_scope(login)] {
        until = until.max(Throttle::default().unlock(ephemeral, &scope, now).await?);
    }
    Ok(until)
}

/// Tells the holder of `account` that their login is locked until `until`, in their language, in
/// the background (a failed delivery is logged; it never delays the login page). Nothing is sent
/// for an account without an email address or not active.
pub fn tell_holder(state: &AppState, account: &Account, until: i64) {
    let Some(email) = account.email.clone().filter(|_| account.status == crate::store::AccountStatus::Active) else {
        return;
    };
    let when = crate::audit::cli::format_time(until).replace('T', " ").replace('Z', "");
    let language = account.locale.as_deref().unwrap_or("fr");
    let rendered = match state.mail_templates.account_locked(language, &when) {
        Ok(rendered) => rendered,
        Err(e) => {
            tracing::error!(error = %e, "lock notification template failed");
            return;
        }
    };
    let mail = crate::mail::OutgoingMail::new(email, None, rendered);
    let mailer = state.mailer.clone();
    let account_id = account.id.clone();
    tokio::spawn(async move {
        match mailer.send(&mail).await {
            Ok(()) => tracing::info!(account = %account_id, "lock notification sent"),
            Err(e) => tracing::error!(error = %e, account = %account_id, "lock notification not delivered"),
        }
    });
}
