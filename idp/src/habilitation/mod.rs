//! Habilitations: which patients a professional may act on, through which relationship, with
//! which actions. Relationships and profiles are durable data (`store`); profiles compile to Cedar
//! policies (`policy`); RFC 9396 `authorization_details` of type `patient_access` are parsed and
//! evaluated against them (`rar`); apps manage relationships (`relationships_api`) and ask for
//! decisions (`decision`); professionals' practice data gives Pro Santé Connect–compatible claims
//! (`professional`).

pub mod cache;
pub mod cli;
pub mod decision;
pub mod patient;
pub mod policy;
pub mod professional;
pub mod professionals_api;
pub mod profiles_api;
pub mod rar;
pub mod relationships;
pub mod relationships_api;
pub mod service;

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use rar::{GrantedAccess, PatientAccess};
use service::Denial;

/// The bearer token of a call to one of Habilis' own APIs: valid, and addressed to Habilis (its
/// `aud` holds the issuer, RFC 9068 §4), so that a token an app obtained for another audience —
/// e.g. exchanged for the API it calls next — cannot be replayed here by that API.
pub async fn api_token(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    now: i64,
) -> Result<crate::oidc::tokens::AccessClaims, crate::error::OAuthError> {
    let token = crate::oidc::userinfo::bearer_token(
        &axum::http::Method::GET,
        headers,
        &axum::http::Uri::from_static("/"),
        &[],
    )?;
    let claims = crate::oidc::tokens::verify_access_token(state, &token, now).await?;
    if !crate::oidc::authorize::audience_contains(Some(&claims.aud), &state.issuer_string()) {
        return Err(crate::oidc::tokens::invalid_token(
            "this access token is for another audience; ask for one without resource (audience: the issuer)",
        ));
    }
    Ok(claims)
}

/// The professional account whose login is `id_nat` (any status), or `not_found` naming it.
pub async fn professional_by_id_nat(
    state: &AppState,
    id_nat: &str,
) -> Result<crate::store::Account, crate::error::OAuthError> {
    let found =
        if id_nat.is_empty() || id_nat.len() > 32 { None } else { state.store.account_by_login(id_nat).await? };
    match found {
        Some(a) if a.kind == crate::store::AccountKind::Professional && a.id_nat.as_deref() == Some(id_nat) => Ok(a),
        _ => {
            Err(crate::error::OAuthError::new(crate::error::OAuthErrorCode::NotFound, "no professional has this idNat"))
        }
    }
}

/// Audits one evaluation of a `patient_access` request (`via`: where it was asked).
pub fn audit_decision_via(
    state: &AppState,
    account_id: &str,
    client_id: &str,
    request: &PatientAccess,
    outcome: &Result<GrantedAccess, Denial>,
    via: &str,
) {
    let (granted, relationship_id, profile, reason, actions) = match outcome {
        Ok(g) => (true, Some(g.relationship.id.clone()), Some(g.profile.clone()), None, g.actions.clone()),
        Err(d) => (false, None, None, Some(d.describe()), request.actions.clone()),
    };
    state.metrics.habilitation_decision(granted, via);
    state.audit.record(
        AuditEvent::HabilitationDecision {
            account_id: account_id.to_string(),
            patient: request.patient.masked(),
            actions,
            granted,
            relationship_id,
            profile,
            reason,
            via: via.to_string(),
        },
        AuditContext { client_id: Some(client_id.to_string()), ..Default::default() },
    );
}

/// Audits an evaluation made while issuing tokens.
pub fn audit_decision(
    state: &AppState,
    account_id: &str,
    client_id: &str,
    request: &PatientAccess,
    outcome: &Result<GrantedAccess, Denial>,
) {
    audit_decision_via(state, account_id, client_id, request, outcome, "token")
}
