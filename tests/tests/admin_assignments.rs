//! Habilitation profile assignments in the admin REST API (`/api/admin/v1/accounts/{id}/profiles`)
//! and their effect on decisions.
//!
//! - `assignments_are_scoped_to_the_callers_organisations`: a platform administrator assigns
//!   platform-wide, an organisation administrator inside their organisation only (another
//!   organisation's member, another organisation or platform-wide → 403, audited); auditors read;
//!   unknown profile or account → 404, bad input → 400 saying what is wrong; each change audited as
//!   `profile_assigned` / `profile_unassigned`.
//! - `an_assignment_grants_at_once_and_its_removal_revokes_at_once`: a profile with
//!   `requires_assignment` allows a decision only for a professional holding it (in the
//!   relationship's organisation, or platform-wide), from the very next decision after the
//!   assignment and not any more from the very next one after its removal; a profile without the
//!   flag keeps applying to everyone; the "who would be allowed" preview agrees.
//!
//! Each runs on SQLite + memory and on PostgreSQL + Redis.

use habilis_e2e::admin::{AdminEnv, PASSWORD, refused};
use habilis_e2e::{Answer, ClientAuth, Storage, drain_audit, first_party_client_metadata, post_form};
use habilis_idp::audit::AuditEvent;
use habilis_idp::habilitation::patient::{OID_NIR, with_nir_key};
use reqwest::Method;
use serde_json::{Value, json};

habilis_e2e::on_both_storages!(
    assignments_are_scoped_to_the_callers_organisations,
    an_assignment_grants_at_once_and_its_removal_revokes_at_once,
);

const EXPERT: &str = "899700427885";
const COORDINATOR: &str = "899700010012";
/// The app asking the decision API.
const APP: &str = "care-app";

/// Adds a professional, member of `orgs`, as the platform administrator; returns its id.
async fn professional(ae: &AdminEnv, id_nat: &str, orgs: &[&str]) -> String {
    let id = ae.env.add_professional(id_nat, "Prénom", "Nom", PASSWORD).await;
    for org in orgs {
        let joined = ae.call(Method::PUT, &format!("/accounts/{id}/organisations/{org}"), &ae.platform, None).await;
        assert_eq!(joined.status, 200, "{:?}", joined.body);
    }
    id
}

#[track_caller]
fn ok(answer: &Answer, status: u16) -> &Value {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    &answer.body
}

fn put_profile_body(actions: &[&str], requires_assignment: bool) -> Value {
    json!({"description": "Coordination des soins", "kinds": ["treating"], "actions": actions, "clients": [APP],
        "requires_assignment": requires_assignment})
}

async fn put_profile(ae: &AdminEnv, name: &str, body: &Value) {
    let put = ae.call(Method::PUT, &format!("/profiles/{name}"), &ae.platform, Some(body)).await;
    assert!(put.status == 201 || put.status == 200, "{:?}", put.body);
}

/// The (profile, organisation) pairs of an assignment list.
fn held(answer: &Answer) -> Vec<(String, Option<String>)> {
    answer.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {:?}", answer.body))
        .iter()
        .map(|a| (a["profile"].as_str().unwrap_or("").to_string(), a["organisation_id"].as_str().map(str::to_string)))
        .collect()
}

fn assignment_events(events: &[AuditEvent]) -> Vec<(&'static str, String, String, Option<String>, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::ProfileAssigned { account_id, profile, organisation_id, actor } => {
                Some(("assigned", account_id.clone(), profile.clone(), organisation_id.clone(), actor.clone()))
            }
            AuditEvent::ProfileUnassigned { account_id, profile, organisation_id, actor } => {
                Some(("unassigned", account_id.clone(), profile.clone(), organisation_id.clone(), actor.clone()))
            }
            _ => None,
        })
        .collect()
}

async fn assignments_are_scoped_to_the_callers_organisations(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    put_profile(&ae, "coordination", &put_profile_body(&["read"], true)).await;
    let shown = ae.call(Method::GET, "/profiles/coordination", &ae.auditor, None).await;
    assert_eq!(ok(&shown, 200)["requires_assignment"], true, "profile CRUD returns the flag");
    put_profile(&ae, "open", &put_profile_body(&["message"], false)).await;
    let pro_a = professional(&ae, EXPERT, &[&ae.org_a]).await;
    let pro_b = professional(&ae, COORDINATOR, &[&ae.org_b]).await;
    let (org_a, org_b) = (ae.org_a.clone(), ae.org_b.clone());
    let item = |account: &str, profile: &str| format!("/accounts/{account}/profiles/{profile}");
    let in_org = |org: &str| json!({ "organisation_id": org });

    // A platform administrator assigns platform-wide; assigning again changes nothing.
    let assigned = ae.call(Method::PUT, &item(&pro_a, "coordination"), &ae.platform, None).await;
    let body = ok(&assigned, 201);
    assert_eq!((body["profile"].as_str(), body["organisation_id"].as_str()), (Some("coordination"), None));
    assert_eq!(body["assigned_by"], format!("account:{}", ae.platform_id));
    assert_eq!(body["requires_assignment"], true);
    let again = ae.call(Method::PUT, &item(&pro_a, "coordination"), &ae.platform, Some(&json!({}))).await;
    assert_eq!(ok(&again, 200)["assigned_at"], assigned.body["assigned_at"], "the first assignment is kept");

    // An organisation administrator assigns to a member of their organisation, inside it.
    let assigned = ae.call(Method::PUT, &item(&pro_a, "coordination"), &ae.alice, Some(&in_org(&org_a))).await;
    assert_eq!(ok(&assigned, 201)["organisation_id"], org_a.as_str());
    let open = ae.call(Method::PUT, &item(&pro_a, "open"), &ae.alice, Some(&in_org(&org_a))).await;
    assert_eq!(ok(&open, 201)["requires_assignment"], false, "allowed, and said to change nothing yet");

    // ... and nowhere else.
    let cases = [
        (&ae.alice, &pro_b, Some(in_org(&org_b)), "own organisation"),
        (&ae.alice, &pro_b, Some(in_org(&org_a)), "own organisation"),
        (&ae.alice, &pro_a, Some(in_org(&org_b)), "own organisation"),
        (&ae.alice, &pro_a, None, "platform-wide assignment needs a platform administrator"),
        (&ae.bob, &pro_a, Some(in_org(&org_a)), "own organisation"),
        (&ae.auditor, &pro_a, Some(in_org(&org_a)), "read-only"),
    ];
    let mut forbidden = 0;
    for (token, account, body, text) in &cases {
        let answer = ae.call(Method::PUT, &item(account, "coordination"), token, body.as_ref()).await;
        refused(&answer, 403, "access_denied", text);
        forbidden += 1;
    }
    let alice_platform_wide = ae.call(Method::DELETE, &item(&pro_a, "coordination"), &ae.alice, None).await;
    refused(&alice_platform_wide, 403, "access_denied", "platform-wide");
    forbidden += 1;

    // Validation and unknown targets.
    refused(
        &ae.call(Method::PUT, &item(&pro_a, "nope"), &ae.platform, None).await,
        404,
        "not_found",
        "no such profile `nope`",
    );
    refused(
        &ae.call(Method::PUT, &item("missing", "coordination"), &ae.platform, None).await,
        404,
        "not_found",
        "account",
    );
    refused(
        &ae.call(Method::PUT, &item(&pro_a, "coordination"), &ae.platform, Some(&in_org(&org_b))).await,
        400,
        "invalid_request",
        "not a member of organisation",
    );
    refused(
        &ae.call(Method::PUT, &item(&pro_a, "coordination"), &ae.platform, Some(&json!({"organisation": org_a}))).await,
        400,
        "invalid_request",
        "unknown field",
    );
    refused(
        &ae.call(Method::PUT, &item(&pro_a, "coordination"), &ae.platform, Some(&in_org("no-such-org"))).await,
        404,
        "not_found",
        "",
    );
    let patient = ae.env.add_patient("patient@example.org", PASSWORD).await;
    refused(
        &ae.call(Method::PUT, &item(&patient, "coordination"), &ae.platform, None).await,
        400,
        "invalid_request",
        "professionals only",
    );
    refused(
        &ae.call(Method::DELETE, &format!("{}?colour=blue", item(&pro_a, "coordination")), &ae.platform, None).await,
        400,
        "invalid_request",
        "colour",
    );

    // Reading: everything to the platform administrator and the auditor; what the caller may assign.
    let list = format!("/accounts/{pro_a}/profiles");
    let expected = vec![
        ("coordination".to_string(), None),
        ("coordination".to_string(), Some(org_a.clone())),
        ("open".to_string(), Some(org_a.clone())),
    ];
    let platform_view = ae.call(Method::GET, &list, &ae.platform, None).await;
    assert_eq!(held(&platform_view), expected);
    assert_eq!(platform_view.body["next_cursor"], Value::Null);
    assert_eq!(platform_view.body["assignable"]["platform_wide"], true);
    assert_eq!(platform_view.body["assignable"]["organisations"], json!([org_a]));
    let names: Vec<&str> = platform_view.body["assignable"]["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["coordination", "open"]);
    let alice_view = ae.call(Method::GET, &list, &ae.alice, None).await;
    assert_eq!(held(&alice_view), expected);
    assert_eq!(alice_view.body["assignable"]["platform_wide"], false);
    assert_eq!(alice_view.body["assignable"]["organisations"], json!([org_a]));
    let auditor_view = ae.call(Method::GET, &list, &ae.auditor, None).await;
    assert_eq!(held(&auditor_view), expected);
    assert_eq!(auditor_view.body["assignable"]["organisations"], json!([]));
    refused(&ae.call(Method::GET, &list, &ae.bob, None).await, 403, "access_denied", "own organisation");
    forbidden += 1;
    let patient_view = ae.call(Method::GET, &format!("/accounts/{patient}/profiles"), &ae.platform, None).await;
    assert_eq!(ok(&patient_view, 200)["assignable"]["profiles"], json!([]), "nothing to assign to a patient");

    // Removal, in the same scopes.
    let remove_in_a = format!("{}?organisation_id={org_a}", item(&pro_a, "coordination"));
    assert_eq!(ae.call(Method::DELETE, &remove_in_a, &ae.alice, None).await.status, 204);
    refused(&ae.call(Method::DELETE, &remove_in_a, &ae.alice, None).await, 404, "not_found", "does not hold");
    assert_eq!(ae.call(Method::DELETE, &item(&pro_a, "coordination"), &ae.platform, None).await.status, 204);
    assert_eq!(
        held(&ae.call(Method::GET, &list, &ae.platform, None).await),
        vec![("open".to_string(), Some(org_a.clone()))]
    );

    // Deleting a profile takes its assignments along.
    assert_eq!(ae.call(Method::DELETE, "/profiles/open", &ae.platform, None).await.status, 204);
    assert!(held(&ae.call(Method::GET, &list, &ae.platform, None).await).is_empty());

    // Every change audited once (not the repeated one); every refusal audited.
    let events: Vec<AuditEvent> = drain_audit(&mut audit).into_iter().map(|r| r.event).collect();
    let (platform, alice) = (format!("account:{}", ae.platform_id), format!("account:{}", ae.alice_id));
    let changes = |kind, profile: &str, org: Option<&String>, actor: &String| {
        (kind, pro_a.clone(), profile.to_string(), org.cloned(), actor.clone())
    };
    assert_eq!(
        assignment_events(&events),
        vec![
            changes("assigned", "coordination", None, &platform),
            changes("assigned", "coordination", Some(&org_a), &alice),
            changes("assigned", "open", Some(&org_a), &alice),
            changes("unassigned", "coordination", Some(&org_a), &alice),
            changes("unassigned", "coordination", None, &platform),
        ]
    );
    let denied =
        events.iter().filter(|e| matches!(e, AuditEvent::AdminAccessDenied { .. })).cloned().collect::<Vec<_>>();
    assert_eq!(denied.len(), forbidden, "{denied:#?}");
    assert!(
        denied.iter().any(|e| matches!(e, AuditEvent::AdminAccessDenied { actor, organisations, target, .. }
            if *actor == alice && organisations.is_empty() && target.contains("platform-wide"))),
        "{denied:#?}"
    );
}

/// A client-credentials token of the app with the `decisions` scope.
async fn app_token(ae: &AdminEnv, secret: &str) -> String {
    let auth = ClientAuth::Basic(APP.into(), secret.into());
    let answer = post_form(
        &ae.http,
        &ae.env.url("/token"),
        &auth,
        &[("grant_type", "client_credentials"), ("scope", "decisions")],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["access_token"].as_str().expect("an access token").to_string()
}

/// May `id_nat` do `action` for the patient of `ins`? (The decision API's answer.)
async fn decide(ae: &AdminEnv, token: &str, ins: &Value, action: &str) -> (bool, String) {
    let question = json!({
        "subject": {"type": "professional", "id": EXPERT},
        "action": {"name": action},
        "resource": {"type": "patient", "properties": ins},
        "context": {"acr": "eidas1"},
    });
    let response = ae.http.post(ae.env.url("/access/v1/evaluation")).bearer_auth(token).json(&question).send().await;
    let answer = habilis_e2e::answer(response.expect("the decision API answers")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let reason = answer.body["context"]["reason"].as_str().unwrap_or("").to_string();
    (answer.body["decision"] == true, reason)
}

async fn an_assignment_grants_at_once_and_its_removal_revokes_at_once(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    let metadata = first_party_client_metadata(
        "https://care.example.org/cb",
        "openid decisions",
        json!({"grant_types": ["client_credentials"]}),
    );
    let secret = ae.env.register_client(APP, &metadata).await.expect("a secret");
    let app = app_token(&ae, &secret).await;
    put_profile(&ae, "coordination", &put_profile_body(&["read"], true)).await;
    put_profile(&ae, "messaging", &put_profile_body(&["message"], false)).await;
    let pro = professional(&ae, EXPERT, &[&ae.org_a, &ae.org_b]).await;
    let (in_a, in_b) = (
        json!({"ins": {"value": with_nir_key("1800175123456"), "oid": OID_NIR}}),
        json!({"ins": {"value": with_nir_key("2900275123456"), "oid": OID_NIR}}),
    );
    let mut relationships = Vec::new();
    for (patient, org, token) in [(&in_a, &ae.org_a, &ae.alice), (&in_b, &ae.org_b, &ae.bob)] {
        let relate = json!({"professional": {"id_nat": EXPERT}, "patient": patient, "kind": "treating",
            "organisation_id": org});
        let created = ae.call(Method::POST, "/relationships", token, Some(&relate)).await;
        relationships.push(ok(&created, 201)["id"].as_str().unwrap().to_string());
    }

    // Not assigned: the profile does not apply; one without the flag does, as before.
    let (allowed, reason) = decide(&ae, &app, &in_a, "read").await;
    assert!(!allowed && reason.contains("profile_not_assigned"), "{reason}");
    assert!(decide(&ae, &app, &in_a, "message").await.0, "profiles without the flag apply to everyone");
    let preview = json!({"samples": [{"relationship_id": relationships[0], "client_id": APP}]});
    let previewed = ae.call(Method::POST, "/profiles/coordination/preview", &ae.platform, Some(&preview)).await;
    let outcome = &ok(&previewed, 200)["results"][0];
    assert_eq!(outcome["candidate"]["granted"], false, "{outcome}");
    assert!(outcome["candidate"]["reason"].as_str().unwrap().contains("profile_not_assigned"), "{outcome}");

    // Assigned in organisation A: granted at the very next decision, for A's relationship only.
    let path = format!("/accounts/{pro}/profiles/coordination");
    let assigned = ae.call(Method::PUT, &path, &ae.alice, Some(&json!({"organisation_id": ae.org_a}))).await;
    ok(&assigned, 201);
    assert!(decide(&ae, &app, &in_a, "read").await.0, "granted at once after the assignment");
    let (allowed, reason) = decide(&ae, &app, &in_b, "read").await;
    assert!(!allowed && reason.contains("profile_not_assigned"), "not in organisation B: {reason}");
    let previewed = ae.call(Method::POST, "/profiles/coordination/preview", &ae.platform, Some(&preview)).await;
    let outcome = &ok(&previewed, 200)["results"][0];
    assert_eq!(
        (outcome["candidate"]["granted"].clone(), outcome["current"]["granted"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(outcome["current"]["profile"], "coordination");

    // Removed: refused at the very next decision.
    let removed = ae.call(Method::DELETE, &format!("{path}?organisation_id={}", ae.org_a), &ae.alice, None).await;
    assert_eq!(removed.status, 204, "{:?}", removed.body);
    assert!(!decide(&ae, &app, &in_a, "read").await.0, "refused at once after the removal");

    // Platform-wide: every organisation's relationships.
    ok(&ae.call(Method::PUT, &path, &ae.platform, None).await, 201);
    assert!(decide(&ae, &app, &in_a, "read").await.0);
    assert!(decide(&ae, &app, &in_b, "read").await.0);
    assert_eq!(ae.call(Method::DELETE, &path, &ae.platform, None).await.status, 204);
    assert!(!decide(&ae, &app, &in_b, "read").await.0);

    // Turning the flag off makes the profile apply to everyone again.
    put_profile(&ae, "coordination", &put_profile_body(&["read"], false)).await;
    assert!(decide(&ae, &app, &in_b, "read").await.0);

    let events: Vec<AuditEvent> = drain_audit(&mut audit).into_iter().map(|r| r.event).collect();
    let assignments = assignment_events(&events);
    assert_eq!(assignments.len(), 4, "{assignments:#?}");
    assert!(assignments.iter().all(|(_, account, profile, _, _)| *account == pro && profile == "coordination"));
}
