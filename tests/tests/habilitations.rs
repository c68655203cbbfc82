//! Habilitations end to end: the second-opinion scenario (a patient solicits an expert, the
//! site's coordinating doctor, another expert refused, the patient revokes), two apps with
//! different profiles for the same professional and patient, and step-up to the card when a
//! profile requires `eidas3`. Each test runs on SQLite + memory and on PostgreSQL + Redis.

use std::path::Path;

use habilis_e2e::habilitations::{
    COORDINATOR, EXPERT, HabilitationEnv, MESSAGING, OTHER_EXPERT, SECOND_OPINION, TELECONSULT, nir, patient_access,
};
use habilis_e2e::{Browser, Landing, Storage, drain_audit, link_by_id, pkce_pair, query_param};
use habilis_idp::audit::AuditEvent;
use habilis_idp::habilitation::patient::OID_NIR;
use reqwest::Method;
use serde_json::{Value, json};

habilis_e2e::on_both_storages!(
    second_opinion_patient_solicits_an_expert_and_revokes,
    two_apps_grant_different_actions_for_the_same_professional_and_patient,
    a_profile_requiring_the_card_steps_up_an_eidas1_session,
    the_token_endpoint_only_narrows_the_authorized_details,
    a_production_issuer_refuses_test_identities,
);

const PATIENT: &str = "patient.p@example.org";

fn granted(tokens: &Value) -> Vec<Value> {
    tokens["authorization_details"].as_array().cloned().unwrap_or_default()
}

fn actions(detail: &Value) -> Vec<String> {
    detail["actions"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn second_opinion_patient_solicits_an_expert_and_revokes(storage: Storage) {
    let Some(he) = HabilitationEnv::start(storage).await else { return };
    let patient_ins = nir("2840375123456");
    he.add_patient(PATIENT).await;
    he.add_professional(EXPERT, "Emma", "Expert").await;
    he.add_professional(COORDINATOR, "Claire", "Coord").await;
    he.add_professional(OTHER_EXPERT, "Fabien", "Other").await;
    let mut audit = he.env.state().audit.subscribe();

    // P logs in to the second-opinion site (password + emailed code) and solicits expert E.
    let p_tokens = he.user_tokens(SECOND_OPINION, PATIENT, PATIENT, None).await;
    assert_eq!(p_tokens.status, 200, "{:?}", p_tokens.body);
    let p_claims = he.claims(p_tokens.body["access_token"].as_str().unwrap()).await;
    assert_eq!(p_claims["acr"], "eidas1", "the patient logged in with a password and an emailed code");
    let p_token = p_tokens.body["access_token"].as_str().unwrap().to_string();
    let patient = json!({"ins": {"value": patient_ins, "oid": OID_NIR}});
    // The site, having verified P's identity, links P's account to P's INS.
    let app = he.app_token(SECOND_OPINION, "relationships").await;
    let linked =
        he.api(Method::POST, "/api/v1/patients", &app, Some(&json!({"patient": patient, "account": PATIENT}))).await;
    assert_eq!(linked.status, 200, "{:?}", linked.body);
    let solicited = he.relate(&p_token, EXPERT, &patient, "second_opinion_expert").await;
    assert_eq!(solicited.status, 201, "{:?}", solicited.body);
    assert_eq!(solicited.body["source"]["evidence"]["type"], "patient_request", "{:?}", solicited.body);
    assert_eq!(solicited.body["source"]["evidence"]["token_id"], p_claims["jti"]);
    let relationship_id = solicited.body["id"].as_str().unwrap().to_string();

    // The site names its coordinating doctor C for this patient (its back end, client credentials).
    let coordination = he.relate(&app, COORDINATOR, &patient, "coordinating_doctor").await;
    assert_eq!(coordination.status, 201, "{:?}", coordination.body);

    // E logs in and gets P's data: read + comment on reports, through the solicitation.
    let mut request = patient_access(&patient_ins, OID_NIR, &["read", "comment"]);
    request["datatypes"] = json!(["report"]);
    let details = json!([request]);
    let e_tokens = he.user_tokens(SECOND_OPINION, EXPERT, "emma@example.org", Some(&details)).await;
    assert_eq!(e_tokens.status, 200, "{:?}", e_tokens.body);
    let e_granted = granted(&e_tokens.body);
    assert_eq!(e_granted.len(), 1, "{:?}", e_tokens.body);
    assert_eq!(actions(&e_granted[0]), ["read", "comment"]);
    assert_eq!(e_granted[0]["datatypes"], json!(["report"]));
    assert_eq!(e_granted[0]["relationship"]["kind"], "second_opinion_expert");
    assert_eq!(e_granted[0]["relationship"]["id"], relationship_id.as_str());
    assert_eq!(e_granted[0]["profile"], "expert");
    let e_access = e_tokens.body["access_token"].as_str().unwrap().to_string();
    let e_claims = he.claims(&e_access).await;
    assert_eq!(e_claims["authorization_details"], e_tokens.body["authorization_details"], "the JWT carries them");
    let introspected = he.introspect(SECOND_OPINION, &e_access).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["authorization_details"], e_tokens.body["authorization_details"]);

    // C (coordinator profile) gets it too; comment is not in that profile, so it is narrowed away.
    let c_details = json!([patient_access(&patient_ins, OID_NIR, &["read", "comment"])]);
    let c_tokens = he.user_tokens(SECOND_OPINION, COORDINATOR, "claire@example.org", Some(&c_details)).await;
    assert_eq!(c_tokens.status, 200, "{:?}", c_tokens.body);
    let c_granted = granted(&c_tokens.body);
    assert_eq!(actions(&c_granted[0]), ["read"], "narrowed to the coordinator profile: {:?}", c_tokens.body);
    assert_eq!(c_granted[0]["profile"], "coordinator");

    // F, another expert the patient did not solicit, is refused with a reason.
    let f_tokens = he.user_tokens(SECOND_OPINION, OTHER_EXPERT, "fabien@example.org", Some(&details)).await;
    assert_eq!(f_tokens.body["error"], "access_denied", "{:?}", f_tokens.body);
    assert!(
        f_tokens.body["error_description"].as_str().is_some_and(|d| d.contains("no active relationship")),
        "{:?}",
        f_tokens.body
    );

    // P revokes: E's token no longer carries the access, and E's next token lacks it.
    let revoked =
        he.api(Method::POST, &format!("/api/v1/relationships/{relationship_id}/revoke"), &p_token, None).await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.body["status"], "revoked");
    let introspected = he.introspect(SECOND_OPINION, &e_access).await;
    assert_eq!(introspected["active"], false, "the only detail was withdrawn: {introspected}");
    let refresh = e_tokens.body["refresh_token"].as_str().expect("a refresh token (offline_access)");
    let refreshed = he.token(SECOND_OPINION, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    assert!(granted(&refreshed.body).is_empty(), "the refreshed token lacks the revoked access: {:?}", refreshed.body);
    let refreshed_claims = he.claims(refreshed.body["access_token"].as_str().unwrap()).await;
    assert!(refreshed_claims["authorization_details"].as_array().is_none_or(|a| a.is_empty()), "{refreshed_claims}");
    let again = he.user_tokens(SECOND_OPINION, EXPERT, "emma@example.org", Some(&details)).await;
    assert_eq!(again.body["error"], "access_denied", "a new login no longer gets it: {:?}", again.body);
    // C's access is untouched by the revocation of E's.
    let c_access = c_tokens.body["access_token"].as_str().unwrap();
    assert_eq!(he.introspect(SECOND_OPINION, c_access).await["active"], true);

    let events = drain_audit(&mut audit);
    let created = events.iter().filter(|r| matches!(r.event, AuditEvent::RelationshipCreated { .. })).count();
    assert_eq!(created, 2, "{events:?}");
    assert!(
        events.iter().any(|r| matches!(&r.event, AuditEvent::RelationshipEnded { relationship_id: id, status, .. }
            if *id == relationship_id && status == "revoked")),
        "{events:?}"
    );
    let decisions: Vec<_> = events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::HabilitationDecision { granted, patient, .. } => Some((*granted, patient.clone())),
            _ => None,
        })
        .collect();
    assert!(decisions.iter().any(|(g, _)| *g) && decisions.iter().any(|(g, _)| !*g), "{decisions:?}");
    assert!(decisions.iter().all(|(_, p)| !p.contains(&patient_ins)), "audit records minimise the INS: {decisions:?}");
}

async fn two_apps_grant_different_actions_for_the_same_professional_and_patient(storage: Storage) {
    let Some(he) = HabilitationEnv::start(storage).await else { return };
    he.add_professional(EXPERT, "Emma", "Expert").await;
    let patient_ins = nir("1750599123456");
    let app = he.app_token(TELECONSULT, "relationships").await;
    let created = he.relate(&app, EXPERT, &HabilitationEnv::ins(&patient_ins), "treating").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let details = json!([patient_access(&patient_ins, OID_NIR, &["read", "write", "teleconsult", "message"])]);

    let tele = he.user_tokens(TELECONSULT, EXPERT, "emma@example.org", Some(&details)).await;
    assert_eq!(tele.status, 200, "{:?}", tele.body);
    assert_eq!(actions(&granted(&tele.body)[0]), ["read", "write", "teleconsult"]);
    assert_eq!(granted(&tele.body)[0]["profile"], "teleconsultation");
    assert_eq!(granted(&tele.body)[0]["datatypes"], json!(["report", "prescription"]));

    let messaging = he.user_tokens(MESSAGING, EXPERT, "emma@example.org", Some(&details)).await;
    assert_eq!(messaging.status, 200, "{:?}", messaging.body);
    assert_eq!(actions(&granted(&messaging.body)[0]), ["read", "message"]);
    assert_eq!(granted(&messaging.body)[0]["profile"], "messaging");
    assert_eq!(granted(&messaging.body)[0]["datatypes"], json!(["report"]));
}

/// A CPS card test PKI (CRL as a file) and the card listener on an ephemeral port.
fn card_config(config: &mut habilis_idp::config::Config, pki: &Path) {
    config.card.mode = habilis_idp::config::CardMode::On;
    config.card.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    config.card.tls_certificate = Some(pki.join("server.pem"));
    config.card.tls_key = Some(pki.join("server.key.pem"));
    config.card.trust_anchors = vec![pki.join("trust-bundle.pem")];
    config.card.crl_sources = vec![pki.join("crl.der").display().to_string()];
}

/// A professional in the care team of a patient: writing needs the `card-only` profile (eidas3).
async fn care_team_member(he: &HabilitationEnv, id_nat: &str, patient_ins: &str) {
    he.add_professional(id_nat, "Maxime", "Maxi").await;
    let app = he.app_token(TELECONSULT, "relationships").await;
    let created = he.relate(&app, id_nat, &HabilitationEnv::ins(patient_ins), "care_team").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
}

async fn a_profile_requiring_the_card_steps_up_an_eidas1_session(storage: Storage) {
    let patient_ins = nir("1840375123456");
    let details = json!([patient_access(&patient_ins, OID_NIR, &["write"])]).to_string();

    // Without card login, the login at eidas1 is not enough and the request fails saying why.
    let Some(no_card) = HabilitationEnv::start(storage).await else { return };
    care_team_member(&no_card, EXPERT, &patient_ins).await;
    let (_, challenge) = pkce_pair();
    let url = no_card.authorize_url(TELECONSULT, &challenge, &[("authorization_details", Some(&details))]);
    let back = no_card.log_in_with_emailed_code(&no_card.env.browser(), &url, EXPERT, "maxime@example.org").await;
    assert_eq!(query_param(&back, "error").as_deref(), Some("unmet_authentication_requirements"), "{back}");
    assert!(query_param(&back, "error_description").is_some_and(|d| d.contains("eidas3")), "{back}");
    no_card.env.stop().await;

    // With card login: an eidas1 session (password + emailed code) is sent to the card.
    let pki = tempfile::tempdir().unwrap();
    habilis_idp::cps::devpki::generate(pki.path(), &["localhost".into(), "127.0.0.1".into()], None).unwrap();
    let Some(he) = HabilitationEnv::start_with(storage, |c| card_config(c, pki.path())).await else { return };
    let manifest: Value = serde_json::from_slice(&std::fs::read(pki.path().join("manifest.json")).unwrap()).unwrap();
    let id_nat = manifest["cards"]["doctor"]["id_nat"].as_str().unwrap().to_string();
    care_team_member(&he, &id_nat, &patient_ins).await;
    let card_origin = he.env.state().card.as_ref().unwrap().public_url.clone();
    let read = |name: &str| std::fs::read(pki.path().join(name)).unwrap();
    let mut identity = read("cards/doctor.pem");
    identity.extend(read("cards/doctor.key.pem"));
    let browser = Browser::with_card(&he.env.url(""), &identity, &read("root-ca.pem"), &[&card_origin]);

    let (verifier, challenge) = pkce_pair();
    let url = he.authorize_url(TELECONSULT, &challenge, &[("authorization_details", Some(&details))]);
    let landing = browser.navigate(&url).await;
    let landing = browser.log_in(landing, &id_nat, habilis_e2e::habilitations::PASSWORD).await;
    let (_, _, body) = landing.page();
    let mail = he.sink.wait_for("maxime@example.org", std::time::Duration::from_secs(20)).await.expect("a code mail");
    let field = |name: &str| habilis_e2e::hidden_input(&body, name).unwrap_or_else(|| panic!("no {name}:\n{body}"));
    let after_code = browser
        .submit(
            "/login/code",
            &[
                ("interaction", &field("interaction")),
                ("csrf", &field("csrf")),
                ("method", &field("method")),
                ("code", &mail.one_time_code().unwrap()),
            ],
        )
        .await;
    // Past the authenticator-app offer ("later"), the eidas1 login does not grant the write
    // access: the card is asked for.
    let after_code = match after_code {
        Landing::Page { url, body, .. } if url.contains("/login/totp") => {
            let field = |name: &str| habilis_e2e::hidden_input(&body, name).expect("the offer form");
            browser
                .submit(
                    "/login/totp",
                    &[("interaction", &field("interaction")), ("csrf", &field("csrf")), ("decision", "later")],
                )
                .await
        }
        other => other,
    };
    let (page, status, body) = match after_code {
        Landing::Page { url, status, body } => (url, status, body),
        Landing::Left(url) => panic!("the eidas1 login must not be enough: sent back to {url}"),
    };
    let card_link =
        link_by_id(&body, "card-login").unwrap_or_else(|| panic!("the card is asked for ({page}, {status}):\n{body}"));
    assert!(card_link.starts_with(&card_origin), "{card_link}");
    let back = browser.navigate(&card_link).await.left();
    let tokens = he.redeem(TELECONSULT, &back, &verifier).await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.body);
    let claims = he.claims(tokens.body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["acr"], "eidas3");
    assert_eq!(actions(&granted(&tokens.body)[0]), ["write"]);
    assert_eq!(granted(&tokens.body)[0]["profile"], "card-only");
}

async fn the_token_endpoint_only_narrows_the_authorized_details(storage: Storage) {
    let Some(he) = HabilitationEnv::start(storage).await else { return };
    he.add_professional(EXPERT, "Emma", "Expert").await;
    let patient_ins = nir("1750599123456");
    let app = he.app_token(TELECONSULT, "relationships").await;
    let created = he.relate(&app, EXPERT, &HabilitationEnv::ins(&patient_ins), "treating").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let details = json!([patient_access(&patient_ins, OID_NIR, &["read", "write"])]).to_string();
    let browser = he.env.browser();
    let (verifier, challenge) = pkce_pair();
    let url = he.authorize_url(TELECONSULT, &challenge, &[("authorization_details", Some(&details))]);
    let back = he.log_in_with_emailed_code(&browser, &url, EXPERT, "emma@example.org").await;
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"));

    // RFC 9396 §6: the code redeemed for read only.
    let read_only = json!([patient_access(&patient_ins, OID_NIR, &["read"])]).to_string();
    let redeemed = he
        .token(
            TELECONSULT,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", habilis_e2e::habilitations::CALLBACK),
                ("code_verifier", &verifier),
                ("authorization_details", &read_only),
            ],
        )
        .await;
    assert_eq!(redeemed.status, 200, "{:?}", redeemed.body);
    assert_eq!(actions(&granted(&redeemed.body)[0]), ["read"]);
    let refresh = redeemed.body["refresh_token"].as_str().unwrap().to_string();

    // A refresh may not ask for more than the authorization (teleconsult is in the profile, not in
    // what was authorized), nor for another patient; it may ask for write, which was authorized.
    let broader = json!([patient_access(&patient_ins, OID_NIR, &["teleconsult"])]).to_string();
    let other_patient = json!([patient_access(&nir("1750599123457"), OID_NIR, &["read"])]).to_string();
    for (raw, what) in [(&broader, "another action"), (&other_patient, "another patient")] {
        let refused = he
            .token(
                TELECONSULT,
                &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("authorization_details", raw)],
            )
            .await;
        assert_eq!(refused.status, 400, "{what}: {:?}", refused.body);
        assert_eq!(refused.body["error"], "invalid_authorization_details", "{what}: {:?}", refused.body);
    }
    let write_only = json!([patient_access(&patient_ins, OID_NIR, &["write"])]).to_string();
    let refreshed = he
        .token(
            TELECONSULT,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("authorization_details", &write_only)],
        )
        .await;
    assert_eq!(refreshed.status, 200, "a refused narrowing does not spend the refresh token: {:?}", refreshed.body);
    assert_eq!(actions(&granted(&refreshed.body)[0]), ["write"]);
}

/// With a production issuer (https, not loopback), test and demo INS are refused: in
/// authorization_details, in the relationships API and in the decision API.
async fn a_production_issuer_refuses_test_identities(storage: Storage) {
    let Some(he) = HabilitationEnv::start_with(storage, |c| {
        c.server.issuer = Some(url::Url::parse("https://idp.example.org").unwrap());
    })
    .await
    else {
        return;
    };
    assert!(he.env.state().habilitations.production);
    let test_ins = nir("1840375123456");
    let test_patient = json!({"ins": {"value": test_ins, "oid": habilis_idp::habilitation::patient::OID_TEST}});
    let details = json!([{"type": "patient_access", "patient": test_patient, "actions": ["read"]}]).to_string();
    let (_, challenge) = pkce_pair();
    let url = he.authorize_url(TELECONSULT, &challenge, &[("authorization_details", Some(&details))]);
    let back = he.env.browser().navigate(&url).await.left();
    assert_eq!(query_param(&back, "error").as_deref(), Some("invalid_authorization_details"), "{back}");
    assert!(query_param(&back, "error_description").is_some_and(|d| d.contains("production")), "{back}");

    he.add_professional(EXPERT, "Emma", "Expert").await;
    let app = he.app_token(TELECONSULT, "relationships").await;
    let refused = he.relate(&app, EXPERT, &test_patient, "treating").await;
    assert_eq!((refused.status, refused.error()), (400, "invalid_request"), "{:?}", refused.body);
    let decisions = he.app_token(TELECONSULT, "decisions").await;
    let question = json!({"subject": {"type": "professional", "id": EXPERT}, "action": {"name": "read"},
        "resource": {"type": "patient", "properties": test_patient}});
    let answer = he.api(Method::POST, "/access/v1/evaluation", &decisions, Some(&question)).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
}
