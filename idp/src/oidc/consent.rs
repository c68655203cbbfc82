//! Consent: third-party clients get a page listing what they will receive; the decision is stored
//! (and revocable). First-party clients skip it.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;

use crate::app::AppState;
use crate::clients::Client;
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::interaction;
use crate::oidc::params::Params;
use crate::store::Consent;
use crate::web::i18n::Lang;

/// Whether the stored consent of the account for the client covers every requested scope.
pub async fn covers(
    state: &AppState,
    account_id: &str,
    client: &Client,
    scopes: &[String],
) -> Result<bool, OAuthError> {
    let Some(consent) = state.store.consent(account_id, client.client_id()).await? else { return Ok(false) };
    let granted: Vec<&str> = consent.scope.split(' ').collect();
    Ok(scopes.iter().all(|s| granted.contains(&s.as_str())))
}

#[derive(Deserialize)]
pub struct ConsentQuery {
    interaction: String,
}

pub async fn page(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<ConsentQuery>) -> Response {
    let interaction = match interaction::load_bound(&state, &headers, &q.interaction).await {
        Ok(i) => i,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
    let (client_name, logo) = client_branding(&state, &interaction.request.client_id).await;
    let texts = state.pages.texts(lang);
    let mut scopes: Vec<String> =
        interaction.request.scope.iter().filter_map(|s| texts.scope_label(s)).map(str::to_string).collect();
    // Patient access as asked for, the patient minimised to the end of its identifier.
    for detail in &interaction.request.authorization_details {
        scopes.push(format!(
            "{} {} ({})",
            texts.consent_patient_access,
            detail.patient.masked(),
            detail.actions.join(", ")
        ));
    }
    state.pages.client_page(
        StatusCode::OK,
        "consent.html",
        lang,
        minijinja::context! { interaction => interaction.id, csrf => interaction.csrf, client_name => client_name, scopes => scopes },
        logo.as_ref(),
        Some(&interaction.request.redirect_uri),
    )
}

pub async fn submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let now = crate::unix_now();
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let mut interaction = match interaction::load_bound(&state, &headers, params.get("interaction").unwrap_or("")).await
    {
        Ok(i) => i,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    if !interaction.csrf_matches(params.get("csrf").unwrap_or("")) {
        return crate::web::pages_error(
            &state,
            &headers,
            None,
            OAuthError::invalid_request("the form is out of date; reload the page"),
        );
    }
    let session = match state.sessions.current(&state, &headers, now).await {
        Ok(Some(s)) => s,
        Ok(None) => return crate::oidc::authorize::continue_interaction(&state, &headers, interaction, now).await,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let request = interaction.request.clone();
    if params.get("decision") != Some("allow") {
        let _ = interaction::finish(&state, &interaction).await;
        let fields = vec![
            ("error", OAuthErrorCode::AccessDenied.as_str().to_string()),
            ("error_description", "the user refused access".to_string()),
            ("state", request.state.clone().unwrap_or_default()),
        ];
        return crate::oidc::authorize::respond(&state, &request.redirect_uri, request.response_mode, &headers, fields);
    }
    let consent = Consent {
        account_id: session.account_id.clone(),
        client_id: request.client_id.clone(),
        scope: request.scope_string(),
        created_at: now,
        updated_at: now,
    };
    if let Err(e) = state.store.upsert_consent(&consent).await {
        return crate::web::pages_error(&state, &headers, None, e.into());
    }
    state.audit.record(
        crate::audit::AuditEvent::ConsentGiven {
            account_id: consent.account_id.clone(),
            client_id: consent.client_id.clone(),
            scope: consent.scope.clone(),
        },
        crate::audit::AuditContext {
            client_id: Some(consent.client_id.clone()),
            ..crate::audit::AuditContext::from_request(&headers, None)
        },
    );
    interaction.consent_given = true;
    // prompt=consent is satisfied by this decision.
    interaction.request.prompt.retain(|p| *p != crate::oidc::authorize::Prompt::Consent);
    crate::oidc::authorize::continue_interaction(&state, &headers, interaction, now).await
}

/// The name and logo a page shows for a client.
pub async fn client_branding(state: &AppState, client_id: &str) -> (Option<String>, Option<url::Url>) {
    match state.clients.get(client_id).await {
        Ok(Some(c)) => (Some(c.client_name().unwrap_or(c.client_id()).to_string()), c.logo_uri().cloned()),
        _ => (None, None),
    }
}

pub async fn client_name(state: &AppState, client_id: &str) -> Option<String> {
    match state.clients.get(client_id).await {
        Ok(Some(c)) => Some(c.client_name().unwrap_or(c.client_id()).to_string()),
        _ => None,
    }
}
