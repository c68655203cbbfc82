//! Card login as a step of the login journey. The browser goes from the login page to the card
//! entry point (`GET <card.public_url>/login/card?interaction=…`), where the TLS handshake (or the
//! trusted proxy) presents the card certificate; Habilis validates it, maps its idNat to an
//! account and hands the result back to the issuer's host through a single-use ticket
//! (`/login/card/complete`), where the interaction cookie lives. The journey then records the
//! factors `sc` + `pin` (the card's PIN unlocked the key that signed the handshake) — `eidas3` —
//! and ends like any other login, including as a step-up of an `eidas1` session.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::audit::{AuditContext, AuditEvent};
use crate::config::UnknownIdNat;
use crate::cps::presented::{Presented, presented_chain};
use crate::cps::validate::{CardRejection, RevocationStatus, ValidatedCard};
use crate::error::{OAuthError, OAuthErrorCode};
use crate::oidc::interaction;
use crate::store::{Account, AccountKind, AccountStatus, Credential};
use crate::web::i18n::Lang;

pub const CARD_PATH: &str = "/login/card";
pub const COMPLETE_PATH: &str = "/login/card/complete";
/// The credential kind that records the certificate last used by an account (secret = its
/// x5t#S256 fingerprint, name = its subject).
pub const CARD_CREDENTIAL: &str = "card";
/// Marks an account created from a card and waiting for an administrator's approval (the account
/// is disabled meanwhile; `habilis user approve` enables it and removes the marker).
pub const APPROVAL_REQUEST: &str = "approval-request";
const TICKET_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

/// Routes of the card listener: the card entry point, and the RFC 8705 mTLS aliases of the
/// endpoints where a client certificate authenticates a client or binds a token.
pub fn card_router(state: AppState) -> Router {
    let routes = Router::new()
        .route(CARD_PATH, get(card_login))
        .route(crate::oidc::token::PATH, axum::routing::post(crate::oidc::token::token))
        .route(crate::oidc::par::PATH, axum::routing::post(crate::oidc::par::push))
        .route(crate::oidc::userinfo::PATH, get(crate::oidc::userinfo::userinfo).post(crate::oidc::userinfo::userinfo))
        .route(crate::oidc::introspect::PATH, axum::routing::post(crate::oidc::introspect::introspect))
        .route(crate::oidc::revoke::PATH, axum::routing::post(crate::oidc::revoke::revoke))
        .route("/static/style.css", get(crate::web::pages::stylesheet))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(|| async { "ok" }));
    crate::app::with_common_layers(routes, state, true)
}

#[derive(Deserialize)]
pub struct CardQuery {
    #[serde(default)]
    interaction: String,
}

#[derive(Deserialize)]
pub struct CompleteQuery {
    #[serde(default)]
    interaction: String,
    #[serde(default)]
    ticket: String,
}

/// What the card entry point hands to the issuer's host.
#[derive(Serialize, Deserialize)]
struct CardTicket {
    interaction: String,
    account_id: String,
    id_nat: String,
    fingerprint: String,
}

fn ticket_key(ticket: &str) -> String {
    format!("card-ticket:{}", crate::cli::sha256_hex(ticket))
}

/// `GET /login/card?interaction=…` on the card listener or behind the trusted proxy.
pub async fn card_login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<CardQuery>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let lang = Lang::negotiate(None, &headers);
    let context = AuditContext::from_request(&headers, Some(peer));
    let Some(card) = state.card.clone() else {
        return crate::web::pages_error(&state, &headers, None, disabled());
    };
    let now = crate::unix_now();
    if crate::authn::login::address_locked(&state, &peer, now).await {
        let t = state.pages.texts(lang);
        return state.pages.page(
            StatusCode::TOO_MANY_REQUESTS,
            "message.html",
            lang,
            minijinja::context! { title => t.card_refused_title, message => t.locked },
        );
    }
    // A forged proxy header is an attack indicator whatever else the request carries.
    let presented = presented_chain(&card, request.extensions(), &headers, peer);
    if let Presented::Forged { header } = &presented {
        state.metrics.forged_proxy_headers.inc();
        tracing::warn!(%peer, %header, "client-certificate header from an address that is not a trusted proxy: ignored");
        state.audit.record(AuditEvent::ForgedProxyHeader { header: header.clone() }, context.clone());
    }
    // The interaction is bound to the browser by a cookie of the issuer's host, which this host
    // may not see: the binding is checked when the ticket comes back (`complete`).
    let interaction = match interaction::load_unbound(&state, &q.interaction).await {
        Ok(i) => i,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let lang = interaction.request.ui_locales.as_deref().map(|l| Lang::negotiate(Some(l), &headers)).unwrap_or(lang);
    let chain = match presented {
        Presented::Chain(chain) => chain,
        Presented::Nothing | Presented::Forged { .. } => {
            return refused(&state, lang, &interaction.id, CardRejection::NoCertificate, None, context);
        }
        Presented::Unreadable => {
            return refused(&state, lang, &interaction.id, CardRejection::Malformed, None, context);
        }
    };
    let validated = match card.validate(&chain, now) {
        Ok(v) => v,
        Err(rejection) => {
            if !matches!(rejection, CardRejection::RevocationStale | CardRejection::RevocationUnknown) {
                crate::authn::login::count_address_failure(&state, &peer, now).await;
            }
            let parsed = chain.first().and_then(|der| crate::cps::certificate::parse_card(der).ok());
            return refused(&state, lang, &interaction.id, rejection, parsed.as_ref(), context);
        }
    };
    if let RevocationStatus::Unchecked(reason) = &validated.revocation {
        tracing::warn!(id_nat = %validated.card.id_nat, reason = reason.code(), "card accepted WITHOUT a revocation check (card.revocation = fail-open)");
        state.audit.record(
            AuditEvent::CardRevocationFailOpen {
                id_nat: validated.card.id_nat.to_string(),
                fingerprint: validated.card.fingerprint.clone(),
                reason: reason.code().to_string(),
            },
            context.clone(),
        );
    }
    let account = match account_for(&state, &validated, now, &context).await {
        Ok(a) => a,
        Err(refusal) => return refusal.page(&state, lang, &interaction.id, &validated, context),
    };
    if interaction.account_id.as_ref().is_some_and(|a| a != &account.id) {
        return AccountRefusal::OtherAccount.page(&state, lang, &interaction.id, &validated, context);
    }
    record_certificate(&state, &account, &validated, now, &context).await;
    let ticket = crate::cli::random_token();
    let value = CardTicket {
        interaction: interaction.id.clone(),
        account_id: account.id.clone(),
        id_nat: validated.card.id_nat.to_string(),
        fingerprint: validated.card.fingerprint.clone(),
    };
    let stored = match serde_json::to_vec(&value) {
        Ok(bytes) => state.ephemeral.put(&ticket_key(&ticket), &bytes, TICKET_LIFETIME).await.map_err(OAuthError::from),
        Err(_) => Err(OAuthError::server_error()),
    };
    if let Err(e) = stored {
        return crate::web::pages_error_in(&state, lang, None, e);
    }
    let issuer = state.issuer_string();
    let mut response = Redirect::to(&format!("{issuer}{COMPLETE_PATH}?interaction={}&ticket={ticket}", interaction.id))
        .into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

/// `GET /login/card/complete?interaction=…&ticket=…` on the issuer's host.
pub async fn complete(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Query(q): Query<CompleteQuery>,
) -> Response {
    let mut interaction = match interaction::load_bound(&state, &headers, &q.interaction).await {
        Ok(i) => i,
        Err(e) => return crate::web::pages_error(&state, &headers, None, e),
    };
    let lang = Lang::negotiate(interaction.request.ui_locales.as_deref(), &headers);
    let invalid = || {
        OAuthError::new(
            OAuthErrorCode::InvalidRequest,
            "this card login has expired or was already used; log in with your card again",
        )
    };
    if q.ticket.is_empty() || q.ticket.len() > 128 {
        return crate::web::pages_error_in(&state, lang, None, invalid());
    }
    let ticket: CardTicket = match state.ephemeral.take(&ticket_key(&q.ticket)).await {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(t) => t,
            Err(_) => return crate::web::pages_error_in(&state, lang, None, invalid()),
        },
        Ok(None) => return crate::web::pages_error_in(&state, lang, None, invalid()),
        Err(e) => return crate::web::pages_error_in(&state, lang, None, e.into()),
    };
    if ticket.interaction != interaction.id {
        return crate::web::pages_error_in(&state, lang, None, invalid());
    }
    if interaction.account_id.as_ref().is_some_and(|a| a != &ticket.account_id) {
        let e = OAuthError::new(
            OAuthErrorCode::AccessDenied,
            "this card belongs to another account than the one you started to log in with; start again",
        );
        return crate::web::pages_error_in(&state, lang, None, e);
    }
    let now = crate::unix_now();
    let session = state.sessions.current(&state, &headers, now).await.ok().flatten();
    let step_up = session.as_ref().is_some_and(|s| s.account_id == ticket.account_id);
    interaction.account_id = Some(ticket.account_id.clone());
    interaction.complete_factor("sc", now);
    interaction.complete_factor("pin", now);
    state.metrics.card_login("success");
    state.metrics.login("card", true);
    let context = AuditContext {
        client_id: Some(interaction.request.client_id.clone()),
        ..AuditContext::from_request(&headers, Some(peer))
    };
    state.audit.record(
        AuditEvent::CardLoginSucceeded {
            account_id: ticket.account_id,
            id_nat: ticket.id_nat,
            fingerprint: ticket.fingerprint,
            step_up,
        },
        context,
    );
    crate::authn::login::advance(&state, &headers, interaction, now).await
}

fn disabled() -> OAuthError {
    OAuthError::new(OAuthErrorCode::NotFound, "card login is not enabled on this server; log in another way")
}

/// Why a valid card does not open a session.
enum AccountRefusal {
    Unknown,
    PendingApproval,
    Disabled,
    OtherAccount,
    Unavailable,
}

impl AccountRefusal {
    fn code(&self) -> &'static str {
        match self {
            AccountRefusal::Unknown => "unknown_account",
            AccountRefusal::PendingApproval => "pending_approval",
            AccountRefusal::Disabled => "account_disabled",
            AccountRefusal::OtherAccount => "other_account",
            AccountRefusal::Unavailable => "temporarily_unavailable",
        }
    }

    fn page(
        &self,
        state: &AppState,
        lang: Lang,
        interaction: &str,
        validated: &ValidatedCard,
        context: AuditContext,
    ) -> Response {
        state.metrics.card_login(self.code());
        state.metrics.login("card", false);
        state.audit.record(
            AuditEvent::CardLoginRefused {
                reason: self.code().to_string(),
                id_nat: Some(validated.card.id_nat.to_string()),
                fingerprint: Some(validated.card.fingerprint.clone()),
                subject: Some(validated.card.subject.clone()),
            },
            context,
        );
        let message = refusal_message(lang, self.code());
        let status = if matches!(self, AccountRefusal::Unavailable) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::FORBIDDEN
        };
        refusal_page(state, lang, interaction, status, self.code(), message)
    }
}

/// The account of the card's idNat, created as `card.unknown_id_nat` says when there is none.
async fn account_for(
    state: &AppState,
    validated: &ValidatedCard,
    now: i64,
    context: &AuditContext,
) -> Result<Account, AccountRefusal> {
    let id_nat = validated.card.id_nat.to_string();
    let existing = state.store.account_by_login(&id_nat).await.map_err(|_| AccountRefusal::Unavailable)?;
    if let Some(account) = existing {
        if account.kind != AccountKind::Professional {
            return Err(AccountRefusal::Unknown);
        }
        return match account.status {
            AccountStatus::Active => Ok(account),
            // An invited professional proves who they are with the card better than with the
            // invitation link: the card login activates the account (the link stays usable to
            // set a password later).
            AccountStatus::Invited => {
                state
                    .store
                    .set_account_status(&account.id, AccountStatus::Active, now)
                    .await
                    .map_err(|_| AccountRefusal::Unavailable)?;
                tracing::info!(account = %account.id, "invited account activated by its card");
                Ok(Account { status: AccountStatus::Active, ..account })
            }
            _ => {
                let pending = state
                    .store
                    .credentials_of(&account.id, APPROVAL_REQUEST)
                    .await
                    .map_err(|_| AccountRefusal::Unavailable)?;
                Err(if pending.is_empty() { AccountRefusal::Disabled } else { AccountRefusal::PendingApproval })
            }
        };
    }
    let policy = state.config.card.unknown_id_nat;
    if policy == UnknownIdNat::Refuse {
        return Err(AccountRefusal::Unknown);
    }
    let pending = policy == UnknownIdNat::Pending;
    let card = &validated.card;
    let account = Account {
        id: uuid::Uuid::now_v7().to_string(),
        kind: AccountKind::Professional,
        login: id_nat.clone(),
        id_nat: Some(id_nat.clone()),
        email: None,
        given_name: card.given_name.clone(),
        family_name: card.family_name.clone(),
        status: if pending { AccountStatus::Disabled } else { AccountStatus::Active },
        locale: None,
        created_at: now,
        updated_at: now,
        last_authenticated_at: None,
    };
    state.store.insert_account(&account).await.map_err(|_| AccountRefusal::Unavailable)?;
    if pending {
        let evidence =
            serde_json::json!({ "source": "card", "subject": card.subject, "fingerprint": card.fingerprint });
        let marker = Credential {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account.id.clone(),
            kind: APPROVAL_REQUEST.into(),
            name: Some(card.subject.clone()),
            secret: evidence.to_string().into_bytes(),
            created_at: now,
            last_used_at: None,
        };
        state.store.insert_credential(&marker).await.map_err(|_| AccountRefusal::Unavailable)?;
    }
    tracing::info!(account = %account.id, id_nat = %id_nat, pending, "account created from a card");
    state.audit.record(
        AuditEvent::CardAccountCreated { account_id: account.id.clone(), id_nat, pending_approval: pending },
        context.clone(),
    );
    if pending {
        return Err(AccountRefusal::PendingApproval);
    }
    Ok(account)
}

/// Records the certificate used on the account; a different one than last time is audited.
async fn record_certificate(
    state: &AppState,
    account: &Account,
    validated: &ValidatedCard,
    now: i64,
    context: &AuditContext,
) {
    let fingerprint = &validated.card.fingerprint;
    let previous = match state.store.credentials_of(&account.id, CARD_CREDENTIAL).await {
        Ok(list) => list.into_iter().next(),
        Err(e) => {
            tracing::warn!(error = %e, "card certificate on record not read");
            return;
        }
    };
    let previous_fingerprint = previous.as_ref().map(|c| String::from_utf8_lossy(&c.secret).into_owned());
    if previous_fingerprint.as_deref() == Some(fingerprint.as_str()) {
        return;
    }
    let credential = Credential {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: account.id.clone(),
        kind: CARD_CREDENTIAL.into(),
        name: Some(validated.card.subject.clone()),
        secret: fingerprint.as_bytes().to_vec(),
        created_at: now,
        last_used_at: Some(now),
    };
    if let Err(e) = state.store.replace_credentials(&credential).await {
        tracing::warn!(error = %e, "card certificate not recorded");
        return;
    }
    state.audit.record(
        AuditEvent::CardCertificateChanged {
            account_id: account.id.clone(),
            previous: previous_fingerprint,
            current: fingerprint.clone(),
        },
        context.clone(),
    );
}

/// A refused card: metric, audit event and a page that says why and what to do.
fn refused(
    state: &AppState,
    lang: Lang,
    interaction: &str,
    rejection: CardRejection,
    parsed: Option<&crate::cps::certificate::CardCertificate>,
    context: AuditContext,
) -> Response {
    let code = rejection.code();
    state.metrics.card_login(code);
    state.metrics.login("card", false);
    tracing::info!(reason = code, detail = %rejection, "card refused");
    state.audit.record(
        AuditEvent::CardLoginRefused {
            reason: code.to_string(),
            id_nat: parsed.map(|c| c.id_nat.to_string()),
            fingerprint: parsed.map(|c| c.fingerprint.clone()),
            subject: parsed.map(|c| c.subject.clone()),
        },
        context,
    );
    let status = match rejection {
        CardRejection::NoCertificate => StatusCode::UNAUTHORIZED,
        CardRejection::RevocationStale | CardRejection::RevocationUnknown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    refusal_page(state, lang, interaction, status, code, refusal_message(lang, code))
}

fn refusal_page(
    state: &AppState,
    lang: Lang,
    interaction: &str,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response {
    let issuer = state.issuer_string();
    let retry = state.card.as_ref().map(|c| c.entry_url(interaction));
    let other_way = format!("{issuer}/login?interaction={interaction}");
    state.pages.page(
        status,
        "card_refused.html",
        lang,
        minijinja::context! { message => message, code => code, retry => retry, other_way => other_way },
    )
}

/// What the person sees for each refusal, with what to do next.
pub fn refusal_message(lang: Lang, code: &str) -> &'static str {
    match (lang, code) {
        (Lang::Fr, "no_certificate") => {
            "Aucun certificat de carte n'a été présenté. Insérez votre carte CPS dans le lecteur, puis réessayez et choisissez son certificat lorsque le navigateur le demande."
        }
        (Lang::En, "no_certificate") => {
            "No card certificate was presented. Insert your CPS card in the reader, try again and choose its certificate when the browser asks."
        }
        (Lang::Fr, "expired") => {
            "Le certificat de votre carte a expiré. Utilisez votre nouvelle carte, ou connectez-vous autrement en attendant."
        }
        (Lang::En, "expired") => {
            "Your card's certificate has expired. Use your renewed card, or log in another way meanwhile."
        }
        (Lang::Fr, "not_yet_valid") => {
            "Le certificat de votre carte n'est pas encore valide. Vérifiez l'heure de votre ordinateur ou réessayez plus tard."
        }
        (Lang::En, "not_yet_valid") => {
            "Your card's certificate is not valid yet. Check your computer's clock or try again later."
        }
        (Lang::Fr, "revoked") => {
            "Cette carte a été révoquée (opposition). Contactez l'Agence du Numérique en Santé pour une nouvelle carte, et connectez-vous autrement en attendant."
        }
        (Lang::En, "revoked") => {
            "This card has been revoked. Contact the issuing agency for a new card, and log in another way meanwhile."
        }
        (Lang::Fr, "unknown_issuer") => {
            "Ce certificat n'a pas été émis par une autorité reconnue (IGC-Santé). Utilisez votre carte CPS, pas un autre certificat."
        }
        (Lang::En, "unknown_issuer") => {
            "This certificate was not issued by a recognised authority (IGC-Santé). Use your CPS card, not another certificate."
        }
        (Lang::Fr, "wrong_usage") => {
            "Ce certificat n'est pas un certificat d'authentification. Choisissez le certificat d'authentification de votre carte."
        }
        (Lang::En, "wrong_usage") => {
            "This certificate is not an authentication certificate. Choose your card's authentication certificate."
        }
        (Lang::Fr, "no_id_nat" | "invalid_id_nat") => {
            "Ce certificat ne porte pas d'identifiant national de professionnel de santé valide. Utilisez votre carte CPS."
        }
        (Lang::En, "no_id_nat" | "invalid_id_nat") => {
            "This certificate carries no valid national health-professional identifier. Use your CPS card."
        }
        (Lang::Fr, "revocation_unknown" | "revocation_stale") => {
            "L'état de révocation des cartes ne peut pas être vérifié pour le moment. Réessayez dans quelques minutes ou connectez-vous autrement."
        }
        (Lang::En, "revocation_unknown" | "revocation_stale") => {
            "Card revocation status cannot be checked right now. Try again in a few minutes or log in another way."
        }
        (Lang::Fr, "malformed") => {
            "Le certificat présenté est illisible. Réessayez ; si cela persiste, connectez-vous autrement."
        }
        (Lang::En, "malformed") => {
            "The certificate presented cannot be read. Try again; if it persists, log in another way."
        }
        (Lang::Fr, "unknown_account") => {
            "Aucun compte Habilis ne correspond à cette carte. Demandez à votre administrateur de créer votre compte."
        }
        (Lang::En, "unknown_account") => {
            "No Habilis account matches this card. Ask your administrator to create your account."
        }
        (Lang::Fr, "pending_approval") => {
            "Votre compte a été créé à partir de votre carte et attend la validation d'un administrateur. Réessayez une fois prévenu."
        }
        (Lang::En, "pending_approval") => {
            "Your account was created from your card and awaits an administrator's approval. Try again once notified."
        }
        (Lang::Fr, "account_disabled") => "Ce compte est désactivé. Contactez votre administrateur.",
        (Lang::En, "account_disabled") => "This account is disabled. Contact your administrator.",
        (Lang::Fr, "other_account") => {
            "Cette carte appartient à un autre compte que celui avec lequel vous avez commencé. Recommencez la connexion."
        }
        (Lang::En, "other_account") => {
            "This card belongs to another account than the one you started with. Start the login again."
        }
        (Lang::Fr, _) => "La connexion par carte n'a pas abouti. Réessayez ou connectez-vous autrement.",
        (Lang::En, _) => "The card login did not succeed. Try again or log in another way.",
    }
}
