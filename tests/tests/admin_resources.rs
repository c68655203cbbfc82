//! The admin REST API's platform resources and relationships (`/api/admin/v1`): clients and
//! initial access tokens, relationships, signing keys, effective settings, and the profile
//! preview. For each, role by role — platform administrator, organisation administrator (own and
//! other organisation), auditor: successes, validation errors (400 saying what is wrong), refusals
//! (403, audited), unknown targets (404) and the audit events of every change. Each scenario runs
//! on SQLite + memory and on PostgreSQL + Redis.

use habilis_e2e::admin::{AdminEnv, PASSWORD, denials, refused};
use habilis_e2e::{Answer, Storage, drain_audit};
use habilis_idp::audit::AuditEvent;
use habilis_idp::habilitation::patient::{OID_NIR, with_nir_key};
use reqwest::Method;
use serde_json::{Value, json};

habilis_e2e::on_both_storages!(
    clients_and_initial_access_tokens_are_platform_wide,
    relationships_are_searched_created_and_revoked_within_the_organisation,
    keys_and_settings_are_read_by_auditors_and_changed_by_platform_administrators,
    profiles_are_previewed_on_samples_and_read_by_auditors,
);

const EXPERT: &str = "899700427885";
const COORDINATOR: &str = "899700010012";

/// Adds a professional and makes it a member of `org` as the platform administrator; returns its id.
async fn professional(ae: &AdminEnv, id_nat: &str, org: &str) -> String {
    let id = ae.env.add_professional(id_nat, "Prénom", "Nom", PASSWORD).await;
    let joined = ae.call(Method::PUT, &format!("/accounts/{id}/organisations/{org}"), &ae.platform, None).await;
    assert_eq!(joined.status, 200, "{:?}", joined.body);
    id
}

#[track_caller]
fn ok(answer: &Answer, status: u16) -> &Value {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    &answer.body
}

fn items(answer: &Answer, key: &str) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {:?}", answer.body))
        .iter()
        .map(|i| i[key].as_str().unwrap_or("").to_string())
        .collect()
}

fn ins(body13: &str) -> Value {
    json!({"ins": {"value": with_nir_key(body13), "oid": OID_NIR}})
}

async fn clients_and_initial_access_tokens_are_platform_wide(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    let crm = json!({
        "client_id": "crm", "client_name": "CRM", "redirect_uris": ["https://crm.example.org/cb"],
        "token_endpoint_auth_method": "client_secret_basic", "minimum_acr": "eidas2",
    });

    // Registration, validated as `habilis client import` validates.
    let created = ae.call(Method::POST, "/clients", &ae.platform, Some(&crm)).await;
    let body = ok(&created, 201);
    let first_secret = body["client_secret"].as_str().expect("a generated secret, shown once").to_string();
    assert!(first_secret.len() >= 43, "{body}");
    assert_eq!(body["client"]["has_secret"], true);
    assert_eq!(body["client"]["valid"], true);
    assert_eq!(body["client"]["metadata"]["minimum_acr"], "eidas2");
    assert!(body["client"]["metadata"].get("client_secret").is_none(), "{body}");
    refused(&ae.call(Method::POST, "/clients", &ae.platform, Some(&crm)).await, 409, "conflict", "already has");
    let cases = [
        (json!({"redirect_uris": ["not a url"]}), "invalid_redirect_uri", "redirect_uris"),
        (
            json!({"redirect_uris": ["https://x.example.org/cb"], "minimum_acr": "eidas4"}),
            "invalid_client_metadata",
            "minimum_acr",
        ),
        (
            json!({"client_id": "bad id!", "redirect_uris": ["https://x.example.org/cb"]}),
            "invalid_client_metadata",
            "client_id",
        ),
        (json!({"client_id": 7}), "invalid_client_metadata", "client_id"),
    ];
    for (metadata, error, text) in cases {
        refused(&ae.call(Method::POST, "/clients", &ae.platform, Some(&metadata)).await, 400, error, text);
    }
    refused(
        &ae.call(Method::POST, "/clients", &ae.platform, Some(&json!([1]))).await,
        400,
        "invalid_client_metadata",
        "object",
    );

    // Listing, filtering, paging; never a secret or its hash.
    let listed = ae.call(Method::GET, "/clients?q=CR", &ae.platform, None).await;
    assert_eq!(items(&listed, "client_id"), vec!["crm"]);
    assert!(!listed.body.to_string().contains(&first_secret));
    assert!(!listed.body.to_string().contains("secret_hash"));
    let first = ae.call(Method::GET, "/clients?limit=1", &ae.platform, None).await;
    assert_eq!(items(&first, "client_id").len(), 1);
    let cursor = first.body["next_cursor"].as_str().expect("more clients").to_string();
    let second = ae.call(Method::GET, &format!("/clients?limit=1&cursor={cursor}"), &ae.platform, None).await;
    assert_ne!(items(&second, "client_id"), items(&first, "client_id"));
    refused(&ae.call(Method::GET, "/clients?colour=blue", &ae.platform, None).await, 400, "invalid_request", "colour");
    refused(&ae.call(Method::GET, "/clients?limit=0", &ae.platform, None).await, 400, "invalid_request", "limit");

    // Edits: a merge patch of the metadata, validated; the secret is kept.
    let patch = json!({"redirect_uris": ["https://crm.example.org/new"], "minimum_acr": "eidas3", "client_name": null});
    let edited = ae.call(Method::PATCH, "/clients/crm", &ae.platform, Some(&patch)).await;
    let body = ok(&edited, 200);
    assert_eq!(body["client"]["metadata"]["redirect_uris"], json!(["https://crm.example.org/new"]));
    assert_eq!(body["client"]["metadata"]["minimum_acr"], "eidas3");
    assert!(body["client"]["metadata"].get("client_name").is_none(), "{body}");
    assert!(body["client_secret"].is_null(), "the secret is kept: {body}");
    let client = ae.env.state().clients.get("crm").await.unwrap().expect("the edited client");
    assert_eq!(client.redirect_uris(), &["https://crm.example.org/new".to_string()]);
    refused(
        &ae.call(Method::PATCH, "/clients/crm", &ae.platform, Some(&json!({"client_secret": "x"}))).await,
        400,
        "invalid_request",
        "cannot be changed",
    );
    refused(
        &ae.call(Method::PATCH, "/clients/crm", &ae.platform, Some(&json!({"minimum_acr": "gold"}))).await,
        400,
        "invalid_client_metadata",
        "minimum_acr",
    );
    refused(
        &ae.call(Method::PATCH, "/clients/crm", &ae.platform, Some(&json!({}))).await,
        400,
        "invalid_request",
        "empty",
    );
    let unchanged = ae.call(Method::GET, "/clients/crm", &ae.auditor, None).await;
    assert_eq!(ok(&unchanged, 200)["metadata"]["minimum_acr"], "eidas3", "a refused edit changes nothing");
    refused(
        &ae.call(Method::PATCH, "/clients/nope", &ae.platform, Some(&patch)).await,
        404,
        "not_found",
        "no such client",
    );
    refused(&ae.call(Method::GET, "/clients/nope", &ae.platform, None).await, 404, "not_found", "no such client");

    // Secret rotation: shown once, different.
    let rotated = ae.call(Method::POST, "/clients/crm/secret", &ae.platform, None).await;
    let new_secret = ok(&rotated, 200)["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, first_secret);
    let public = json!({"client_id": "spa", "redirect_uris": ["https://spa.example.org/cb"], "token_endpoint_auth_method": "none"});
    let spa = ae.call(Method::POST, "/clients", &ae.platform, Some(&public)).await;
    assert!(ok(&spa, 201)["client_secret"].is_null());
    refused(
        &ae.call(Method::POST, "/clients/spa/secret", &ae.platform, None).await,
        400,
        "invalid_request",
        "no client secret",
    );
    refused(
        &ae.call(Method::POST, "/clients/nope/secret", &ae.platform, None).await,
        404,
        "not_found",
        "no such client",
    );

    // Other roles: organisation administrators neither read nor change clients; auditors read.
    refused(&ae.call(Method::GET, "/clients", &ae.alice, None).await, 403, "access_denied", "platform-wide");
    refused(&ae.call(Method::POST, "/clients", &ae.alice, Some(&crm)).await, 403, "access_denied", "platform-wide");
    refused(&ae.call(Method::GET, "/clients/crm", &ae.bob, None).await, 403, "access_denied", "platform-wide");
    assert_eq!(items(&ae.call(Method::GET, "/clients?q=crm", &ae.auditor, None).await, "client_id"), vec!["crm"]);
    refused(&ae.call(Method::DELETE, "/clients/crm", &ae.auditor, None).await, 403, "access_denied", "read-only");
    refused(&ae.call(Method::POST, "/clients/crm/secret", &ae.auditor, None).await, 403, "access_denied", "read-only");

    // Deletion.
    assert_eq!(ae.call(Method::DELETE, "/clients/crm", &ae.platform, None).await.status, 204);
    refused(&ae.call(Method::DELETE, "/clients/crm", &ae.platform, None).await, 404, "not_found", "no such client");
    assert!(ae.env.state().clients.get("crm").await.unwrap().is_none(), "the registry refuses it at once");

    // Initial access tokens for dynamic registration.
    let issue = json!({"expires_in": 3600, "max_uses": 2, "description": "partner"});
    let issued = ae.call(Method::POST, "/initial-access-tokens", &ae.platform, Some(&issue)).await;
    let body = ok(&issued, 201).clone();
    let (iat, iat_id) = (body["token"].as_str().unwrap().to_string(), body["id"].as_str().unwrap().to_string());
    assert_eq!((body["state"].as_str(), body["max_uses"].as_i64()), (Some("usable"), Some(2)));
    for (bad, text) in [
        (json!({"max_uses": 0}), "max_uses"),
        (json!({"expires_in": 0}), "expires_in"),
        (json!({"expires_in": 100_000_000}), "expires_in"),
        (json!({"description": "x".repeat(201)}), "description"),
        (json!({"uses": 1}), "unknown field"),
    ] {
        refused(
            &ae.call(Method::POST, "/initial-access-tokens", &ae.platform, Some(&bad)).await,
            400,
            "invalid_request",
            text,
        );
    }
    let registration = ae
        .http
        .post(ae.env.url(habilis_idp::oidc::registration::PATH))
        .bearer_auth(&iat)
        .json(&json!({"client_name": "Partner", "redirect_uris": ["https://partner.example.org/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(registration.status(), 201, "the issued token registers a client");
    let listed = ae.call(Method::GET, "/initial-access-tokens", &ae.auditor, None).await;
    assert_eq!(items(&listed, "id"), vec![iat_id.clone()]);
    assert_eq!(listed.body["items"][0]["uses"], 1);
    assert!(!listed.body.to_string().contains(&iat), "never the token itself");
    let self_registered = ae.call(Method::GET, "/clients?q=partner", &ae.platform, None).await;
    assert_eq!(self_registered.body["items"][0]["self_registered"], true, "{:?}", self_registered.body);
    refused(
        &ae.call(Method::POST, "/initial-access-tokens", &ae.alice, Some(&issue)).await,
        403,
        "access_denied",
        "platform-wide",
    );
    refused(
        &ae.call(Method::POST, "/initial-access-tokens", &ae.auditor, Some(&issue)).await,
        403,
        "access_denied",
        "read-only",
    );
    refused(
        &ae.call(Method::GET, "/initial-access-tokens?state=bogus", &ae.platform, None).await,
        400,
        "invalid_request",
        "state",
    );
    assert_eq!(
        ae.call(Method::DELETE, &format!("/initial-access-tokens/{iat_id}"), &ae.platform, None).await.status,
        204
    );
    refused(
        &ae.call(Method::DELETE, &format!("/initial-access-tokens/{iat_id}"), &ae.platform, None).await,
        404,
        "not_found",
        "no unrevoked",
    );
    let revoked = ae.call(Method::GET, "/initial-access-tokens?state=revoked", &ae.platform, None).await;
    assert_eq!(items(&revoked, "id"), vec![iat_id.clone()]);
    assert!(
        items(&ae.call(Method::GET, "/initial-access-tokens?state=usable", &ae.platform, None).await, "id").is_empty()
    );

    // Audit: every change, with before/after metadata and never a secret.
    let events = drain_audit(&mut audit);
    let changes: Vec<(String, String, bool, bool)> = events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::ClientChanged { client_id, change, before, after, actor } => {
                assert!(actor.starts_with("account:"), "{actor}");
                Some((client_id.clone(), change.clone(), before.is_some(), after.is_some()))
            }
            _ => None,
        })
        .collect();
    let crm_changes: Vec<(String, bool, bool)> =
        changes.iter().filter(|c| c.0 == "crm").map(|c| (c.1.clone(), c.2, c.3)).collect();
    assert_eq!(
        crm_changes,
        vec![
            ("registered".into(), false, true),
            ("updated".into(), true, true),
            ("secret_rotated".into(), true, true),
            ("deleted".into(), true, false)
        ]
    );
    let text = serde_json::to_string(&events).unwrap();
    for secret in [&first_secret, &new_secret, &iat] {
        assert!(!text.contains(secret.as_str()), "a secret reached the audit log");
    }
    assert!(events.iter().any(|r| matches!(&r.event, AuditEvent::RegistrationTokenIssued { token_id, actor, .. }
        if *token_id == iat_id && actor.starts_with("account:"))));
    assert!(
        events
            .iter()
            .any(|r| matches!(&r.event, AuditEvent::RegistrationTokenRevoked { token_id, .. } if *token_id == iat_id))
    );
    let denied = denials(&events);
    assert!(denied.contains(&(format!("account:{}", ae.alice_id), "read".into(), vec![])), "{denied:?}");
}

async fn relationships_are_searched_created_and_revoked_within_the_organisation(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    let (a, b) = (ae.org_a.clone(), ae.org_b.clone());
    professional(&ae, EXPERT, &a).await;
    professional(&ae, COORDINATOR, &b).await;
    let patient = ins("1800175123456");
    let new = |id_nat: &str, org: Option<&str>| {
        json!({"professional": {"id_nat": id_nat}, "patient": patient, "kind": "treating", "organisation_id": org,
            "reason": "admission"})
    };

    // An organisation administrator creates relationships in its organisation only.
    let created = ae.call(Method::POST, "/relationships", &ae.alice, Some(&new(EXPERT, Some(&a)))).await;
    let body = ok(&created, 201).clone();
    let in_a = body["id"].as_str().unwrap().to_string();
    assert_eq!((body["status"].as_str(), body["organisation_id"].as_str()), (Some("active"), Some(a.as_str())));
    assert_eq!(body["professional"]["id_nat"], EXPERT);
    assert_eq!(body["source"]["evidence"]["reason"], "admission");
    refused(
        &ae.call(Method::POST, "/relationships", &ae.alice, Some(&new(COORDINATOR, Some(&b)))).await,
        403,
        "access_denied",
        "own organisation",
    );
    refused(
        &ae.call(Method::POST, "/relationships", &ae.alice, Some(&new(EXPERT, None))).await,
        403,
        "access_denied",
        "name it",
    );
    let mut cases = vec![
        (new(COORDINATOR, Some(&a)), 400, "invalid_request", "not a member"),
        (
            json!({"professional": {"id_nat": EXPERT}, "patient": patient, "kind": "neighbour", "organisation_id": a}),
            400,
            "invalid_request",
            "kind must be one of",
        ),
        (
            json!({"professional": {"id_nat": EXPERT}, "patient": {"ins": {"value": "1", "oid": OID_NIR}}, "kind": "treating", "organisation_id": a}),
            400,
            "invalid_request",
            "patient:",
        ),
        (
            json!({"professional": {"id_nat": EXPERT}, "patient": {"local_id": "42", "namespace": "no-such-app"}, "kind": "treating", "organisation_id": a}),
            400,
            "invalid_request",
            "namespace",
        ),
        (
            json!({"professional": {"id_nat": EXPERT}, "patient": patient, "kind": "treating", "organisation_id": a, "valid_until": 1}),
            400,
            "invalid_request",
            "valid_until",
        ),
        (
            json!({"professional": {"id_nat": "899700000000"}, "patient": patient, "kind": "treating", "organisation_id": a}),
            404,
            "not_found",
            "no professional",
        ),
        (
            json!({"professional": {"id_nat": EXPERT}, "patient": patient, "kind": "treating", "organisation_id": a, "colour": 1}),
            400,
            "invalid_request",
            "colour",
        ),
    ];
    let mut long = new(EXPERT, Some(&a));
    long["reason"] = json!("x".repeat(501));
    cases.push((long, 400, "invalid_request", "reason"));
    for (body, status, error, text) in cases {
        refused(&ae.call(Method::POST, "/relationships", &ae.alice, Some(&body)).await, status, error, text);
    }
    let in_b = ae.call(Method::POST, "/relationships", &ae.platform, Some(&new(COORDINATOR, Some(&b)))).await;
    let in_b = ok(&in_b, 201)["id"].as_str().unwrap().to_string();
    refused(
        &ae.call(Method::POST, "/relationships", &ae.auditor, Some(&new(EXPERT, Some(&a)))).await,
        403,
        "access_denied",
        "read-only",
    );

    // Search: by organisation (an organisation administrator's own by default), professional,
    // patient, status; paged.
    assert_eq!(items(&ae.call(Method::GET, "/relationships", &ae.alice, None).await, "id"), vec![in_a.clone()]);
    refused(
        &ae.call(Method::GET, &format!("/relationships?organisation={b}"), &ae.alice, None).await,
        403,
        "access_denied",
        "own organisation",
    );
    // Newest first; both were created within the same second, so (created_at, id) decides.
    let mut all = items(&ae.call(Method::GET, "/relationships", &ae.platform, None).await, "id");
    let newest_first = all.clone();
    all.sort();
    let mut expected = vec![in_a.clone(), in_b.clone()];
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(items(&ae.call(Method::GET, "/relationships", &ae.auditor, None).await, "id").len(), 2);
    let by_professional =
        ae.call(Method::GET, &format!("/relationships?professional={EXPERT}"), &ae.platform, None).await;
    assert_eq!(items(&by_professional, "id"), vec![in_a.clone()]);
    let value = patient["ins"]["value"].as_str().unwrap();
    let by_patient =
        ae.call(Method::GET, &format!("/relationships?ins_value={value}&ins_oid={OID_NIR}"), &ae.auditor, None).await;
    assert_eq!(items(&by_patient, "id").len(), 2);
    let unknown_patient = ins("2900275123456");
    let unknown_value = unknown_patient["ins"]["value"].as_str().unwrap();
    let none = ae
        .call(Method::GET, &format!("/relationships?ins_value={unknown_value}&ins_oid={OID_NIR}"), &ae.platform, None)
        .await;
    assert!(items(&none, "id").is_empty());
    let page = ae.call(Method::GET, "/relationships?limit=1", &ae.platform, None).await;
    assert_eq!(items(&page, "id"), newest_first[..1].to_vec());
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let next = ae.call(Method::GET, &format!("/relationships?limit=1&cursor={cursor}"), &ae.platform, None).await;
    assert_eq!(items(&next, "id"), newest_first[1..].to_vec());
    assert!(next.body["next_cursor"].is_null());
    refused(
        &ae.call(Method::GET, "/relationships?status=ended", &ae.platform, None).await,
        400,
        "invalid_request",
        "status",
    );
    refused(
        &ae.call(Method::GET, "/relationships?ins_value=1", &ae.platform, None).await,
        400,
        "invalid_request",
        "ins_oid",
    );
    refused(
        &ae.call(Method::GET, "/relationships?professional=899700000000", &ae.platform, None).await,
        404,
        "not_found",
        "no professional",
    );
    refused(
        &ae.call(Method::GET, "/relationships?cursor=zz", &ae.platform, None).await,
        400,
        "invalid_request",
        "cursor",
    );

    // Show and revoke.
    assert_eq!(
        ok(&ae.call(Method::GET, &format!("/relationships/{in_a}"), &ae.alice, None).await, 200)["id"],
        in_a.as_str()
    );
    refused(
        &ae.call(Method::GET, &format!("/relationships/{in_b}"), &ae.alice, None).await,
        403,
        "access_denied",
        "own organisation",
    );
    refused(
        &ae.call(Method::GET, "/relationships/nope", &ae.platform, None).await,
        404,
        "not_found",
        "no such relationship",
    );
    refused(
        &ae.call(Method::POST, &format!("/relationships/{in_a}/revoke"), &ae.bob, None).await,
        403,
        "access_denied",
        "own organisation",
    );
    refused(
        &ae.call(Method::POST, &format!("/relationships/{in_a}/revoke"), &ae.auditor, None).await,
        403,
        "access_denied",
        "read-only",
    );
    let revoked = ae.call(Method::POST, &format!("/relationships/{in_a}/revoke"), &ae.alice, None).await;
    assert_eq!(ok(&revoked, 200)["status"], "revoked");
    refused(
        &ae.call(Method::POST, &format!("/relationships/{in_a}/revoke"), &ae.alice, None).await,
        400,
        "invalid_request",
        "already revoked",
    );
    refused(
        &ae.call(Method::POST, "/relationships/nope/revoke", &ae.platform, None).await,
        404,
        "not_found",
        "no such relationship",
    );
    assert_eq!(
        items(&ae.call(Method::GET, "/relationships?status=revoked", &ae.platform, None).await, "id"),
        vec![in_a.clone()]
    );
    assert_eq!(
        items(&ae.call(Method::GET, "/relationships?status=active", &ae.platform, None).await, "id"),
        vec![in_b.clone()]
    );
    let stored = ae.env.state().store.habilitations().relationship(&in_a).await.unwrap().unwrap();
    assert_eq!(stored.revoked_by.as_deref(), Some(format!("account:{}", ae.alice_id).as_str()));

    // Audit: the domain events and the admin events with before/after; cross-organisation refusals.
    let events = drain_audit(&mut audit);
    let admin_changes: Vec<(String, String, bool)> = events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AdminRelationshipChanged { relationship_id, change, before, after, .. } => {
                assert!(after.is_some());
                Some((relationship_id.clone(), change.clone(), before.is_some()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        admin_changes,
        vec![
            (in_a.clone(), "created".into(), false),
            (in_b.clone(), "created".into(), false),
            (in_a.clone(), "revoked".into(), true)
        ]
    );
    assert!(events.iter().any(|r| matches!(&r.event, AuditEvent::RelationshipCreated { relationship_id, actor, .. }
        if *relationship_id == in_a && *actor == format!("account:{}", ae.alice_id))));
    assert!(events.iter().any(|r| matches!(&r.event, AuditEvent::RelationshipEnded { relationship_id, status, .. }
        if *relationship_id == in_a && status == "revoked")));
    let denied = denials(&events);
    assert!(denied.contains(&(format!("account:{}", ae.alice_id), "write".into(), vec![b.clone()])), "{denied:?}");
    assert!(denied.contains(&(format!("account:{}", ae.alice_id), "read".into(), vec![b.clone()])), "{denied:?}");
}

async fn keys_and_settings_are_read_by_auditors_and_changed_by_platform_administrators(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();

    // Listing: public facts only.
    let listed = ae.call(Method::GET, "/keys", &ae.auditor, None).await;
    let keys = ok(&listed, 200)["items"].as_array().unwrap().clone();
    assert!(keys.iter().any(|k| k["alg"] == "ES256" && k["active"] == true), "{keys:?}");
    for key in &keys {
        let members: Vec<&String> = key.as_object().unwrap().keys().collect();
        for member in &members {
            assert!(
                ["kid", "alg", "state", "active", "created_at", "activates_at", "retired_at", "published_until"]
                    .contains(&member.as_str()),
                "{member}"
            );
        }
    }
    refused(&ae.call(Method::GET, "/keys", &ae.alice, None).await, 403, "access_denied", "platform-wide");

    // Rotation: validated; published at once; signing after the activation delay or now.
    for (body, text) in [
        (json!({"alg": "HS256"}), "alg must be"),
        (json!({"alg": "EdDSA"}), "not enabled"),
        (json!({"activate_now": "yes"}), "invalid JSON"),
    ] {
        refused(&ae.call(Method::POST, "/keys/rotate", &ae.platform, Some(&body)).await, 400, "invalid_request", text);
    }
    refused(
        &ae.call(Method::POST, "/keys/rotate", &ae.auditor, Some(&json!({}))).await,
        403,
        "access_denied",
        "read-only",
    );
    refused(
        &ae.call(Method::POST, "/keys/rotate", &ae.bob, Some(&json!({}))).await,
        403,
        "access_denied",
        "platform-wide",
    );
    let pending = ae.call(Method::POST, "/keys/rotate", &ae.platform, Some(&json!({"alg": "ES256"}))).await;
    let body = ok(&pending, 201).clone();
    assert_eq!((body["state"].as_str(), body["active"].as_bool()), (Some("pending"), Some(false)), "{body}");
    let pending_kid = body["kid"].as_str().unwrap().to_string();
    assert!(ae.env.state().keys.published_kids().contains(&pending_kid), "published at once");
    let old_rs = keys.iter().find(|k| k["alg"] == "RS256" && k["active"] == true).expect("an RS256 key")["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let now =
        ae.call(Method::POST, "/keys/rotate", &ae.platform, Some(&json!({"alg": "RS256", "activate_now": true}))).await;
    let new_rs = ok(&now, 201)["kid"].as_str().unwrap().to_string();
    // It signs at once; within the second the previous key was created in, either may be chosen.
    assert_ne!(now.body["state"], "pending", "{:?}", now.body);

    // Retirement.
    let retired = ae.call(Method::POST, &format!("/keys/{old_rs}/retire"), &ae.platform, None).await;
    assert_eq!(ok(&retired, 200)["state"], "retired-published");
    let listed = ae.call(Method::GET, "/keys", &ae.platform, None).await;
    let active_rs: Vec<&Value> = ok(&listed, 200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == "RS256" && k["active"] == true)
        .collect();
    assert_eq!(active_rs.len(), 1);
    assert_eq!(active_rs[0]["kid"], new_rs.as_str());
    refused(
        &ae.call(Method::POST, &format!("/keys/{old_rs}/retire"), &ae.platform, None).await,
        409,
        "conflict",
        "already retired",
    );
    refused(
        &ae.call(Method::POST, &format!("/keys/{new_rs}/retire"), &ae.platform, None).await,
        409,
        "conflict",
        "RS256",
    );
    refused(&ae.call(Method::POST, "/keys/nope/retire", &ae.platform, None).await, 404, "not_found", "no signing key");
    refused(
        &ae.call(Method::POST, &format!("/keys/{new_rs}/retire"), &ae.auditor, None).await,
        403,
        "access_denied",
        "read-only",
    );

    // Settings: readable by auditors and platform administrators, every secret redacted.
    let settings = ae.call(Method::GET, "/settings", &ae.auditor, None).await;
    let body = ok(&settings, 200).clone();
    assert_eq!(body["keys"]["default_algorithm"], "ES256");
    assert!(body["derived"]["issuer"].as_str().unwrap().starts_with("http://"));
    let config = &ae.env.state().config;
    let text = body.to_string();
    let mut secrets: Vec<String> = config.keys.master_key.iter().cloned().collect();
    for url in [config.storage.database_url.as_deref(), config.storage.redis_url.as_deref()].into_iter().flatten() {
        if let Some(password) = url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_owned)) {
            secrets.push(password);
        }
    }
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret of the configuration leaked");
    }
    assert_eq!(ok(&ae.call(Method::GET, "/settings", &ae.platform, None).await, 200)["keys"], body["keys"]);
    refused(&ae.call(Method::GET, "/settings", &ae.alice, None).await, 403, "access_denied", "platform-wide");

    let events = drain_audit(&mut audit);
    assert!(events.iter().any(|r| matches!(&r.event, AuditEvent::SigningKeyRotated { kid, actor, .. }
        if *kid == pending_kid && actor.starts_with("account:"))));
    assert!(events.iter().any(|r| matches!(&r.event, AuditEvent::SigningKeyRetired { kid, .. } if *kid == old_rs)));
    assert!(!denials(&events).is_empty());
}

async fn profiles_are_previewed_on_samples_and_read_by_auditors(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    professional(&ae, EXPERT, &ae.org_a).await;
    let patient = ins("1800175123456");
    let relate = json!({"professional": {"id_nat": EXPERT}, "patient": patient, "kind": "treating", "organisation_id": ae.org_a});
    let relationship = ae.call(Method::POST, "/relationships", &ae.alice, Some(&relate)).await;
    let relationship = ok(&relationship, 201)["id"].as_str().unwrap().to_string();
    let candidate = json!({"kinds": ["treating"], "actions": ["read", "write"], "datatypes": ["report"],
        "clients": ["tele"], "min_acr": "eidas2"});
    let preview_path = "/profiles/teleconsult/preview";
    let samples = json!([
        {"relationship_id": relationship},
        {"professional": EXPERT, "patient": ins("2900275123456")},
        {"relationship_id": relationship, "acr": "eidas1"},
        {"relationship_id": relationship, "client_id": "other-app", "actions": ["read"]},
    ]);

    // A candidate, not stored: what it alone would grant, and what the profiles in force decide.
    let preview = ae
        .call(Method::POST, preview_path, &ae.platform, Some(&json!({"profile": candidate, "samples": samples})))
        .await;
    let body = ok(&preview, 200).clone();
    assert_eq!(body["profile"], "teleconsult");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["candidate"]["granted"], true, "{body}");
    assert_eq!(results[0]["candidate"]["actions"], json!(["read", "write"]));
    assert_eq!(results[0]["candidate"]["relationship_id"], relationship.as_str());
    assert_eq!(results[0]["current"]["granted"], false, "no profile is in force yet: {body}");
    assert_eq!((results[0]["client_id"].as_str(), results[0]["acr"].as_str()), (Some("tele"), Some("eidas2")));
    assert!(results[1]["candidate"]["reason"].as_str().unwrap().contains("no active relationship"), "{body}");
    assert!(results[2]["candidate"]["reason"].as_str().unwrap().contains("eidas2"), "{body}");
    assert!(results[3]["candidate"]["reason"].as_str().unwrap().contains("no habilitation profile"), "{body}");
    assert!(ae.env.state().habilitations.definitions().is_empty(), "a preview stores nothing");

    // Validation.
    let with = |profile: Value, samples: Value| json!({"profile": profile, "samples": samples});
    let mut bad_condition = candidate.clone();
    bad_condition["condition"] = json!("resource.nope == 1");
    let mut bad_kind = candidate.clone();
    bad_kind["kinds"] = json!(["neighbour"]);
    let mut other_name = candidate.clone();
    other_name["name"] = json!("else");
    let one = json!([{"relationship_id": relationship}]);
    let cases = [
        (with(bad_condition, one.clone()), 400, "invalid_request", "nope"),
        (with(bad_kind, one.clone()), 400, "invalid_request", "relationship kind"),
        (with(other_name, one.clone()), 400, "invalid_request", "differs"),
        (with(candidate.clone(), json!([])), 400, "invalid_request", "samples must hold"),
        (
            with(candidate.clone(), json!([{"relationship_id": relationship, "professional": EXPERT}])),
            400,
            "invalid_request",
            "samples[0]",
        ),
        (
            with(candidate.clone(), json!([{"relationship_id": relationship, "acr": "gold"}])),
            400,
            "invalid_request",
            "acr",
        ),
        (with(candidate.clone(), json!([{"relationship_id": "nope"}])), 404, "not_found", "no such relationship"),
        (
            with(candidate.clone(), json!([{"professional": "899700000000", "patient": patient}])),
            404,
            "not_found",
            "samples[0]",
        ),
        (
            with(
                candidate.clone(),
                json!([{"professional": EXPERT, "patient": {"ins": {"value": "1", "oid": OID_NIR}}}]),
            ),
            400,
            "invalid_request",
            "patient",
        ),
    ];
    for (body, status, error, text) in cases {
        refused(&ae.call(Method::POST, preview_path, &ae.platform, Some(&body)).await, status, error, text);
    }
    refused(
        &ae.call(Method::POST, preview_path, &ae.platform, Some(&json!({"samples": one}))).await,
        404,
        "not_found",
        "no such profile",
    );

    // Stored, the profile in force grants the same; the stored profile previews without a candidate.
    let mut stored = candidate.clone();
    stored["name"] = json!("teleconsult");
    assert_eq!(ae.call(Method::PUT, "/profiles/teleconsult", &ae.platform, Some(&stored)).await.status, 201);
    let again = ae.call(Method::POST, preview_path, &ae.auditor, Some(&json!({"samples": one}))).await;
    let body = ok(&again, 200);
    assert_eq!(body["results"][0]["candidate"]["granted"], true, "{body}");
    assert_eq!(body["results"][0]["current"]["granted"], true, "{body}");
    assert_eq!(body["results"][0]["current"]["profile"], "teleconsult");

    // Roles: auditors read profiles and preview; organisation administrators do neither.
    assert_eq!(
        ok(&ae.call(Method::GET, "/profiles", &ae.auditor, None).await, 200)["profiles"][0]["name"],
        "teleconsult"
    );
    assert_eq!(ok(&ae.call(Method::GET, "/profiles/teleconsult", &ae.auditor, None).await, 200)["name"], "teleconsult");
    refused(
        &ae.call(Method::PUT, "/profiles/teleconsult", &ae.auditor, Some(&stored)).await,
        403,
        "access_denied",
        "platform",
    );
    refused(&ae.call(Method::GET, "/profiles", &ae.alice, None).await, 403, "access_denied", "platform-wide");
    refused(
        &ae.call(Method::POST, preview_path, &ae.bob, Some(&json!({"samples": one}))).await,
        403,
        "access_denied",
        "platform-wide",
    );
    refused(&ae.call(Method::GET, "/profiles/nope", &ae.auditor, None).await, 404, "not_found", "no such profile");

    let denied = denials(&drain_audit(&mut audit));
    assert!(denied.contains(&(format!("account:{}", ae.alice_id), "read".into(), vec![])), "{denied:?}");
}
