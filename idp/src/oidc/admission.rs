//! Admission of anonymous work: what a request that proves nothing about its sender may make the
//! server store — a login page (interaction), a pushed authorization request, a passkey challenge,
//! a password-reset request.
//!
//! Without a bound, one client filled the in-memory store in a second (every real login then
//! failed with 503 for half an hour) and Redis without limit. Three fixed-window counters in the
//! ephemeral store, incremented atomically before anything is stored:
//!
//! - **all senders together**: `limits.anonymous_entries` is split over the windows an entry can
//!   live through. An entry created in one window lives at most `lifetime`, so at any moment the
//!   live entries come from at most `ceil(lifetime / window) + 1` windows; admitting
//!   `anonymous_entries / (ceil(lifetime / window) + 1)` per window keeps them at or below the
//!   bound, on memory and Redis alike. Past it: 503 `temporarily_unavailable` (the service is busy),
//!   while sessions and logins already under way carry on;
//! - **per address** (IPv6: per /64, what one subscriber gets) and **per client**: 429
//!   `temporarily_unavailable`, so that one sender cannot use the shared budget up alone.
//!
//! The global count is taken first and given back when a per-sender limit refuses, so a flood from
//! one address that is refused costs the others nothing. The counters are themselves entries; one
//! per admitted sender and window, so they are bounded by the same budget.

use std::net::IpAddr;
use std::time::Duration;

use crate::app::AppState;
use crate::error::{OAuthError, OAuthErrorCode};

/// What is being admitted, for the metrics and the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Interaction,
    PushedRequest,
    PasskeyChallenge,
    PasswordReset,
}

impl Work {
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Interaction => "interaction",
            Work::PushedRequest => "pushed_request",
            Work::PasskeyChallenge => "passkey_challenge",
            Work::PasswordReset => "password_reset",
        }
    }
}

/// Why anonymous work was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address sent more than its share this window.
    Address,
    /// This client's users started more than its share this window.
    Client,
    /// The shared budget of this window is used up.
    Saturated,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Address => "address",
            Refusal::Client => "client",
            Refusal::Saturated => "saturated",
        }
    }
}

impl From<Refusal> for OAuthError {
    fn from(refusal: Refusal) -> OAuthError {
        match refusal {
            Refusal::Address => OAuthError::new(
                OAuthErrorCode::TooManyRequests,
                "too many logins were started from your network in the last minute; wait a minute, then go back to the application and start again",
            ),
            Refusal::Client => OAuthError::new(
                OAuthErrorCode::TooManyRequests,
                "too many logins were started for this application in the last minute; wait a minute, then start again from the application",
            ),
            Refusal::Saturated => OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "the service is receiving more new logins than it can take; logins already under way carry on. Wait a minute, then start again from the application",
            ),
        }
    }
}

/// The address scope: the address itself for IPv4, its /64 for IPv6 (an attacker with one IPv6
/// subscription has 2^64 addresses; a counter per address would bound nothing).
pub fn address_scope(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// How many anonymous entries one window may admit, all senders together, so that no more than
/// `limits.anonymous_entries` are ever alive (see the module comment).
pub fn per_window_budget(entries: u64, lifetime: Duration, window: Duration) -> u64 {
    let window = window.as_secs().max(1);
    let windows_alive = lifetime.as_secs().div_ceil(window) + 1;
    (entries / windows_alive).max(1)
}

/// The longest any anonymous entry lives: what [`per_window_budget`] divides by.
pub fn longest_anonymous_lifetime(state: &AppState) -> Duration {
    let c = &state.config;
    c.session
        .unanswered_interaction_lifetime
        .max(c.oidc.par_lifetime)
        .max(crate::authn::passkeys::CEREMONY_LIFETIME)
        .max(crate::authn::account::RESET_REQUEST_WINDOW)
}

/// Admits one piece of anonymous work from `address` (when known) for `client_id` (when known),
/// or says why not. A failing ephemeral store refuses (fail closed) with its own error.
pub async fn admit(
    state: &AppState,
    work: Work,
    address: Option<IpAddr>,
    client_id: Option<&str>,
) -> Result<(), OAuthError> {
    let limits = &state.config.limits;
    let eph = state.ephemeral.as_ref();
    let budget = per_window_budget(limits.anonymous_entries, longest_anonymous_lifetime(state), limits.window);
    let refused = |refusal: Refusal| {
        state.metrics.admission_refusal(work.as_str(), refusal.reason());
        tracing::warn!(work = work.as_str(), reason = refusal.reason(), "anonymous work refused");
        Err(OAuthError::from(refusal))
    };
    if eph.incr("admit:all", limits.window).await? > budget {
        return refused(Refusal::Saturated);
    }
    if let Some(ip) = address
        && limits.anonymous_per_address != 0
        && eph.incr(&format!("admit:ip:{}", address_scope(ip)), limits.window).await?
            > u64::from(limits.anonymous_per_address)
    {
        eph.decr("admit:all").await?;
        return refused(Refusal::Address);
    }
    if let Some(client_id) = client_id
        && limits.anonymous_per_client != 0
        && eph.incr(&format!("admit:client:{client_id}"), limits.window).await? > u64::from(limits.anonymous_per_client)
    {
        eph.decr("admit:all").await?;
        return refused(Refusal::Client);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_every_live_entry_under_the_bound() {
        // 10-minute entries, 1-minute windows: entries of 11 windows can be alive at once.
        assert_eq!(per_window_budget(50_000, Duration::from_secs(600), Duration::from_secs(60)), 4545);
        assert_eq!(per_window_budget(110, Duration::from_secs(600), Duration::from_secs(60)), 10);
        // A lifetime that is not a multiple of the window rounds up.
        assert_eq!(per_window_budget(100, Duration::from_secs(61), Duration::from_secs(60)), 33);
        assert_eq!(per_window_budget(1, Duration::from_secs(600), Duration::from_secs(60)), 1);
        // Simulated worst case: admit the budget at the very start of every window; count what is
        // alive at each second.
        let (entries, lifetime, window) = (1000u64, 600u64, 60u64);
        let budget = per_window_budget(entries, Duration::from_secs(lifetime), Duration::from_secs(window));
        for t in 0..5000u64 {
            let alive: u64 = (0..=t / window).filter(|w| w * window + lifetime > t).map(|_| budget).sum();
            assert!(alive <= entries, "{alive} alive at {t}");
        }
    }

    #[test]
    fn ipv6_senders_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_scope(a), address_scope(b));
        assert_ne!(address_scope(a), address_scope(c));
        assert_eq!(address_scope("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(address_scope("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
