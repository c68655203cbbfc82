//! The admin REST API (`/api/admin/v1`), resource by resource and role by role: platform
//! administrator, organisation administrator (limited to its organisation), auditor (read-only).
//! Each scenario checks successes, validation errors (400 saying what is wrong), refusals across
//! organisations (403, audited), unknown targets (404) and the audit events of every change. Each
//! runs on SQLite + memory and on PostgreSQL + Redis. The OpenAPI document is checked against the
//! served routes.

use std::ops::Deref;
use std::time::Duration;

use habilis_e2e::admin::{self, API_BASE, CONSOLE_CLIENT, PASSWORD, admin_token, denials, refused};
use habilis_e2e::smtp_sink::SmtpSink;
use habilis_e2e::{
    AccountSpec, Answer, Landing, Storage, TEST_MAIL_FROM, TestEnv, answer, backchannel_http, create_account,
    drain_audit, hidden_input,
};
use habilis_idp::audit::AuditEvent;
use habilis_idp::store::AccountKind;
use reqwest::Method;
use serde_json::{Value, json};

habilis_e2e::on_both_storages!(
    roles_are_granted_by_platform_administrators_only,
    organisations_and_departments_respect_each_role,
    accounts_are_searched_invited_and_changed_within_the_organisation,
    account_factors_and_sessions_are_reset_and_ended,
    me_answers_each_callers_powers,
    a_locked_account_is_shown_and_unlocked_within_the_organisation,
);

const MAIL_WAIT: Duration = Duration::from_secs(20);

/// The shared admin fixture on a server that mails through an SMTP sink, with Alice and Bob members
/// of their organisations.
struct AdminEnv {
    admin: admin::AdminEnv,
    sink: SmtpSink,
}

impl Deref for AdminEnv {
    type Target = admin::AdminEnv;

    fn deref(&self) -> &admin::AdminEnv {
        &self.admin
    }
}

impl AdminEnv {
    async fn start(storage: Storage) -> Option<AdminEnv> {
        let sink = SmtpSink::start().await;
        let smtp_url = sink.url();
        let admin = admin::AdminEnv::start_with(storage, |config| {
            config.mail.smtp_url = Some(url::Url::parse(&smtp_url).expect("an SMTP URL"));
            config.mail.from = TEST_MAIL_FROM.into();
        })
        .await?;
        // The organisation administrators belong to their organisation.
        for (account, org) in [(&admin.alice_id, &admin.org_a), (&admin.bob_id, &admin.org_b)] {
            let joined = admin
                .call(Method::PUT, &format!("/accounts/{account}/organisations/{org}"), &admin.platform, None)
                .await;
            assert_eq!(joined.status, 200, "{:?}", joined.body);
        }
        Some(AdminEnv { admin, sink })
    }

    /// Searches accounts with `query` (a query string) as `token`.
    async fn search(&self, query: &str, token: &str) -> Answer {
        self.call(Method::GET, &format!("/accounts?{query}"), token, None).await
    }

    /// Invites an account as `token`; returns the answer.
    async fn invite(&self, token: &str, body: Value) -> Answer {
        self.call(Method::POST, "/accounts", token, Some(&body)).await
    }

    /// Invites a professional of `org` as the platform administrator; returns its id.
    async fn member(&self, id_nat: &str, email: &str, org: &str) -> String {
        let body = json!({"kind": "professional", "id_nat": id_nat, "email": email, "organisation_id": org});
        let created = self.invite(&self.platform, body).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        created.body["account"]["id"].as_str().expect("an id").to_string()
    }
}

fn ids(answer: &Answer) -> Vec<String> {
    answer.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {:?}", answer.body))
        .iter()
        .map(|i| i["id"].as_str().or_else(|| i["account"]["id"].as_str()).unwrap_or("").to_string())
        .collect()
}

async fn roles_are_granted_by_platform_administrators_only(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    let carol = create_account(
        ae.env.state(),
        &AccountSpec {
            kind: AccountKind::Professional,
            login: "carol@example.org".into(),
            id_nat: None,
            email: None,
            given_name: None,
            family_name: None,
        },
        PASSWORD,
    )
    .await;
    let patient = ae.env.add_patient("paul@example.org", PASSWORD).await;

    // Platform administrator: grants, with validation.
    let grant = |account: &str, role: &str, org: Option<&str>| json!({"account_id": account, "role": role, "organisation_id": org});
    let granted =
        ae.call(Method::POST, "/roles", &ae.platform, Some(&grant(&carol, "org_admin", Some(&ae.org_a)))).await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    assert_eq!(granted.body["role"], "org_admin");
    assert_eq!(granted.body["organisation_id"], ae.org_a.as_str());
    let grant_id = granted.body["id"].as_str().unwrap().to_string();
    let again = ae.call(Method::POST, "/roles", &ae.platform, Some(&grant(&carol, "org_admin", Some(&ae.org_a)))).await;
    refused(&again, 409, "conflict", "already holds");
    let cases = [
        (grant(&carol, "org_admin", None), 400, "invalid_request", "needs organisation_id"),
        (grant(&carol, "auditor", Some(&ae.org_a)), 400, "invalid_request", "only for org_admin"),
        (grant(&carol, "superuser", None), 400, "invalid_request", "unknown variant"),
        (grant(&patient, "auditor", None), 400, "invalid_request", "patient"),
        (grant("no-such-account", "auditor", None), 404, "not_found", "no such account"),
        (grant(&carol, "org_admin", Some("no-such-org")), 404, "not_found", "no such organisation"),
    ];
    for (body, status, error, text) in cases {
        refused(&ae.call(Method::POST, "/roles", &ae.platform, Some(&body)).await, status, error, text);
    }

    // Organisation administrator: reads its organisation's grants, grants nothing.
    let mine = ae.call(Method::GET, &format!("/roles?organisation={}", ae.org_a), &ae.alice, None).await;
    assert_eq!(mine.status, 200, "{:?}", mine.body);
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 2, "Alice and Carol: {:?}", mine.body);
    assert!(mine.body["next_cursor"].is_null());
    let theirs = ae.call(Method::GET, &format!("/roles?organisation={}", ae.org_b), &ae.alice, None).await;
    refused(&theirs, 403, "access_denied", "own organisation");
    refused(&ae.call(Method::GET, "/roles", &ae.alice, None).await, 403, "access_denied", "own organisation");
    let by_alice = ae.call(Method::POST, "/roles", &ae.alice, Some(&grant(&carol, "org_admin", Some(&ae.org_a)))).await;
    refused(&by_alice, 403, "access_denied", "only platform administrators");
    refused(
        &ae.call(Method::DELETE, &format!("/roles/{grant_id}"), &ae.alice, None).await,
        403,
        "access_denied",
        "only platform",
    );

    // Auditor: reads everything, changes nothing.
    let all = ae.call(Method::GET, "/roles", &ae.auditor, None).await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(all.body["items"].as_array().unwrap().len(), 4, "{:?}", all.body);
    let by_auditor = ae.call(Method::POST, "/roles", &ae.auditor, Some(&grant(&carol, "auditor", None))).await;
    refused(&by_auditor, 403, "access_denied", "read-only");
    let of_carol = ae.call(Method::GET, &format!("/roles?account={carol}"), &ae.auditor, None).await;
    assert_eq!(ids(&of_carol), vec![grant_id.clone()]);
    refused(
        &ae.call(Method::GET, "/roles?account=nobody", &ae.auditor, None).await,
        404,
        "not_found",
        "no such account",
    );
    refused(&ae.call(Method::GET, "/roles?colour=blue", &ae.auditor, None).await, 400, "invalid_request", "colour");

    // Revocation.
    assert_eq!(ae.call(Method::DELETE, &format!("/roles/{grant_id}"), &ae.platform, None).await.status, 204);
    refused(
        &ae.call(Method::DELETE, &format!("/roles/{grant_id}"), &ae.platform, None).await,
        404,
        "not_found",
        "no such role",
    );
    // The revoked administrator has no role left: its token is refused.
    let carol_token = admin_token(&ae.env, &carol, "admin");
    refused(
        &ae.call(Method::GET, "/organisations", &carol_token, None).await,
        403,
        "access_denied",
        "no administration role",
    );

    // Tokens: no token, no admin scope.
    let anonymous = answer(ae.http.get(ae.env.url(&format!("{API_BASE}/roles"))).send().await.unwrap()).await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    let openid_only = admin_token(&ae.env, &ae.alice_id, "openid");
    refused(&ae.call(Method::GET, "/roles", &openid_only, None).await, 403, "insufficient_scope", "admin");

    let events = drain_audit(&mut audit);
    let changes: Vec<(bool, bool)> = events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AdminRoleChanged { account_id, actor, before, after } if *account_id == carol => {
                assert!(actor.starts_with("account:"), "{actor}");
                Some((before.is_some(), after.is_some()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(changes, vec![(false, true), (true, false)], "granted then revoked: {events:?}");
    let denied = denials(&events);
    assert!(
        denied.contains(&(format!("account:{}", ae.alice_id), "read".into(), vec![ae.org_b.clone()])),
        "the cross-organisation read is audited: {denied:?}"
    );
    assert!(denied.iter().any(|(_, op, _)| op == "administer"), "{denied:?}");
}

/// `GET /me`: each caller's powers with its token, as the console reads them at login.
async fn me_answers_each_callers_powers(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let me = |token: &str| {
        let token = token.to_string();
        let ae = &ae;
        async move {
            let answer = ae.call(Method::GET, "/me", &token, None).await;
            assert_eq!(answer.status, 200, "{:?}", answer.body);
            answer.body
        }
    };
    let platform = me(&ae.platform).await;
    assert_eq!(platform["id"], format!("account:{}", ae.platform_id));
    assert_eq!((platform["platform_admin"].as_bool(), platform["read_only"].as_bool()), (Some(true), Some(false)));
    let alice = me(&ae.alice).await;
    assert_eq!(alice["platform_admin"], false, "{alice}");
    assert_eq!(alice["organisations"], json!([ae.org_a]), "{alice}");
    assert_eq!((alice["auditor"].as_bool(), alice["read_only"].as_bool()), (Some(false), Some(false)));
    let auditor = me(&ae.auditor).await;
    assert_eq!(auditor["auditor"], true, "{auditor}");
    assert_eq!((auditor["platform_admin"].as_bool(), auditor["read_only"].as_bool()), (Some(false), Some(true)));
    // A platform administrator's audit-only token reads only.
    let platform_reading = me(&admin_token(&ae.env, &ae.platform_id, "audit")).await;
    assert_eq!(platform_reading["platform_admin"], false, "{platform_reading}");
    assert_eq!(platform_reading["read_only"], true, "{platform_reading}");

    // An organisation administrator who is also an auditor holds both scopes, but no platform
    // power: what the console needs to hide the key rotation.
    let body = json!({"account_id": ae.bob_id, "role": "auditor"});
    let granted = ae.call(Method::POST, "/roles", &ae.platform, Some(&body)).await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    let both = me(&admin_token(&ae.env, &ae.bob_id, "admin audit")).await;
    assert_eq!(both["organisations"], json!([ae.org_b]), "{both}");
    assert_eq!((both["platform_admin"].as_bool(), both["auditor"].as_bool()), (Some(false), Some(true)), "{both}");
    let rotate = ae.call(Method::POST, "/keys/rotate", &admin_token(&ae.env, &ae.bob_id, "admin audit"), None).await;
    refused(&rotate, 403, "access_denied", "platform-wide");

    // No role, no token, no scope.
    let carol = ae.env.add_patient("carol@example.org", PASSWORD).await;
    refused(
        &ae.call(Method::GET, "/me", &admin_token(&ae.env, &carol, "admin"), None).await,
        403,
        "access_denied",
        "no administration role",
    );
    let anonymous = answer(ae.http.get(ae.env.url(&format!("{API_BASE}/me"))).send().await.unwrap()).await;
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    refused(
        &ae.call(Method::GET, "/me", &admin_token(&ae.env, &ae.alice_id, "openid"), None).await,
        403,
        "insufficient_scope",
        "admin",
    );
}

async fn organisations_and_departments_respect_each_role(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    let (a, b) = (ae.org_a.clone(), ae.org_b.clone());

    // Creation, validation, identifiers.
    let created = ae
        .call(
            Method::POST,
            "/organisations",
            &ae.platform,
            Some(&json!({"name": "  Centre C  ", "identifier_type": "FINESS", "identifier": "750000001"})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["name"], "Centre C", "trimmed");
    assert_eq!(created.body["disabled"], false);
    let c = created.body["id"].as_str().unwrap().to_string();
    let cases = [
        (json!({"name": " "}), 400, "invalid_request", "name must not be empty"),
        (json!({"name": "X", "identifier": "1"}), 400, "invalid_request", "go together"),
        (json!({"name": "X", "colour": "blue"}), 400, "invalid_request", "unknown field `colour`"),
        (json!({"name": "Dup", "identifier_type": "FINESS", "identifier": "750000001"}), 409, "conflict", "identifier"),
    ];
    for (body, status, error, text) in cases {
        refused(&ae.call(Method::POST, "/organisations", &ae.platform, Some(&body)).await, status, error, text);
    }
    refused(
        &ae.call(Method::POST, "/organisations", &ae.alice, Some(&json!({"name": "Mine"}))).await,
        403,
        "access_denied",
        "only platform administrators",
    );
    refused(
        &ae.call(Method::POST, "/organisations", &ae.auditor, Some(&json!({"name": "Mine"}))).await,
        403,
        "access_denied",
        "read-only",
    );

    // Lists: filter by name, pages; organisation administrators see their own only.
    let page1 = ae.call(Method::GET, "/organisations?limit=2", &ae.platform, None).await;
    assert_eq!(page1.status, 200, "{:?}", page1.body);
    assert_eq!(ids(&page1), vec![c.clone(), b.clone()], "by name: Centre C, Clinique B");
    let cursor = page1.body["next_cursor"].as_str().expect("a next page").to_string();
    let page2 = ae.call(Method::GET, &format!("/organisations?limit=2&cursor={cursor}"), &ae.platform, None).await;
    assert_eq!(ids(&page2), vec![a.clone()]);
    assert!(page2.body["next_cursor"].is_null());
    let filtered = ae.call(Method::GET, "/organisations?q=CLINIQUE", &ae.auditor, None).await;
    assert_eq!(ids(&filtered), vec![b.clone()]);
    assert_eq!(ids(&ae.call(Method::GET, "/organisations", &ae.alice, None).await), vec![a.clone()]);
    assert_eq!(ids(&ae.call(Method::GET, "/organisations?q=clinique", &ae.alice, None).await), Vec::<String>::new());
    refused(&ae.call(Method::GET, "/organisations?limit=0", &ae.platform, None).await, 400, "invalid_request", "limit");
    refused(
        &ae.call(Method::GET, "/organisations?cursor=nope", &ae.platform, None).await,
        400,
        "invalid_request",
        "cursor",
    );

    // Show and change.
    assert_eq!(ae.call(Method::GET, &format!("/organisations/{a}"), &ae.alice, None).await.status, 200);
    refused(
        &ae.call(Method::GET, &format!("/organisations/{b}"), &ae.alice, None).await,
        403,
        "access_denied",
        "own organisation",
    );
    refused(
        &ae.call(Method::GET, "/organisations/nope", &ae.alice, None).await,
        404,
        "not_found",
        "no such organisation",
    );
    let renamed = ae
        .call(Method::PATCH, &format!("/organisations/{a}"), &ae.alice, Some(&json!({"name": "Hôpital A (nord)"})))
        .await;
    assert_eq!(renamed.status, 200, "{:?}", renamed.body);
    assert_eq!(renamed.body["name"], "Hôpital A (nord)");
    refused(
        &ae.call(Method::PATCH, &format!("/organisations/{b}"), &ae.alice, Some(&json!({"name": "Taken over"}))).await,
        403,
        "access_denied",
        "own organisation",
    );
    refused(
        &ae.call(Method::PATCH, &format!("/organisations/{a}"), &ae.alice, Some(&json!({"disabled": true}))).await,
        403,
        "access_denied",
        "only platform administrators",
    );
    refused(
        &ae.call(Method::PATCH, &format!("/organisations/{a}"), &ae.alice, Some(&json!({"name": ""}))).await,
        400,
        "invalid_request",
        "name must not be empty",
    );
    refused(
        &ae.call(Method::PATCH, &format!("/organisations/{a}"), &ae.auditor, Some(&json!({"name": "Z"}))).await,
        403,
        "access_denied",
        "read-only",
    );

    // Departments.
    let path = format!("/organisations/{a}/departments");
    let cardio = ae.call(Method::POST, &path, &ae.alice, Some(&json!({"name": "Cardiologie"}))).await;
    assert_eq!(cardio.status, 201, "{:?}", cardio.body);
    let cardio_id = cardio.body["id"].as_str().unwrap().to_string();
    refused(
        &ae.call(Method::POST, &path, &ae.alice, Some(&json!({"name": "Cardiologie"}))).await,
        409,
        "conflict",
        "department",
    );
    refused(
        &ae.call(Method::POST, &path, &ae.alice, Some(&json!({}))).await,
        400,
        "invalid_request",
        "missing field `name`",
    );
    refused(
        &ae.call(Method::POST, &format!("/organisations/{b}/departments"), &ae.alice, Some(&json!({"name": "X"})))
            .await,
        403,
        "access_denied",
        "own organisation",
    );
    refused(
        &ae.call(Method::POST, &path, &ae.auditor, Some(&json!({"name": "Y"}))).await,
        403,
        "access_denied",
        "read-only",
    );
    assert_eq!(ids(&ae.call(Method::GET, &path, &ae.auditor, None).await), vec![cardio_id.clone()]);
    refused(
        &ae.call(Method::GET, &format!("/organisations/{a}/departments"), &ae.bob, None).await,
        403,
        "access_denied",
        "own",
    );
    let item = format!("{path}/{cardio_id}");
    assert_eq!(ae.call(Method::DELETE, &item, &ae.alice, None).await.status, 204);
    refused(&ae.call(Method::DELETE, &item, &ae.alice, None).await, 404, "not_found", "no such department");

    // Disable, delete.
    let disabled =
        ae.call(Method::PATCH, &format!("/organisations/{c}"), &ae.platform, Some(&json!({"disabled": true}))).await;
    assert_eq!((disabled.status, disabled.body["disabled"].as_bool()), (200, Some(true)), "{:?}", disabled.body);
    refused(
        &ae.call(Method::POST, &format!("/organisations/{c}/departments"), &ae.platform, Some(&json!({"name": "Z"})))
            .await,
        400,
        "invalid_request",
        "disabled",
    );
    refused(
        &ae.call(Method::DELETE, &format!("/organisations/{a}"), &ae.alice, None).await,
        403,
        "access_denied",
        "only platform",
    );
    refused(
        &ae.call(Method::DELETE, &format!("/organisations/{a}"), &ae.platform, None).await,
        409,
        "conflict",
        "members",
    );
    assert_eq!(ae.call(Method::DELETE, &format!("/organisations/{c}"), &ae.platform, None).await.status, 204);
    refused(
        &ae.call(Method::GET, &format!("/organisations/{c}"), &ae.platform, None).await,
        404,
        "not_found",
        "no such",
    );

    let events = drain_audit(&mut audit);
    let org_changes: Vec<(String, bool, bool)> = events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::OrganisationChanged { organisation_id, before, after, .. } => {
                Some((organisation_id.clone(), before.is_some(), after.is_some()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        org_changes,
        vec![(c.clone(), false, true), (a.clone(), true, true), (c.clone(), true, true), (c.clone(), true, false)],
        "created, renamed, disabled, deleted"
    );
    let renamed_event = events.iter().find_map(|r| match &r.event {
        AuditEvent::OrganisationChanged { organisation_id, before: Some(before), after: Some(after), actor }
            if *organisation_id == a =>
        {
            Some((actor.clone(), before.clone(), after.clone()))
        }
        _ => None,
    });
    let (actor, before, after) = renamed_event.expect("the rename is audited");
    assert_eq!(actor, format!("account:{}", ae.alice_id));
    assert!(before.contains("Hôpital A\"") && after.contains("Hôpital A (nord)"), "{before} → {after}");
    let departments = events.iter().filter(|r| matches!(r.event, AuditEvent::DepartmentChanged { .. })).count();
    assert_eq!(departments, 2, "created and deleted");
    let denied = denials(&events);
    assert!(denied.contains(&(format!("account:{}", ae.alice_id), "write".into(), vec![b.clone()])), "{denied:?}");
}

async fn accounts_are_searched_invited_and_changed_within_the_organisation(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    let (a, b) = (ae.org_a.clone(), ae.org_b.clone());

    // Alice invites a professional into her organisation; the invitee sets a password.
    let invited = ae
        .invite(
            &ae.alice,
            json!({"kind": "professional", "id_nat": "899700427885", "email": "Emma@Example.org",
                "given_name": "Emma", "family_name": "Expert", "locale": "en", "organisation_id": a}),
        )
        .await;
    assert_eq!(invited.status, 201, "{:?}", invited.body);
    assert_eq!(invited.body["account"]["status"], "invited");
    assert_eq!(invited.body["account"]["login"], "899700427885");
    assert_eq!(invited.body["organisations"][0]["organisation_id"], a.as_str());
    assert!(invited.body["invitation_expires_at"].as_i64().unwrap() > habilis_idp::unix_now());
    assert!(!invited.body.to_string().contains("token"), "the link goes by mail only");
    let emma = invited.body["account"]["id"].as_str().unwrap().to_string();
    let mail = ae.sink.wait_for("emma@example.org", MAIL_WAIT).await.expect("the invitation mail");
    assert_eq!(mail.subject().as_deref(), Some("Your Habilis account is waiting for you"));
    let text = mail.text_body().expect("a text part");
    let start = text.find("/invitation?token=").expect("a link in the mail");
    let path: String = text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    let browser = ae.env.browser();
    let (_, status, page) = browser.navigate(&path).await.page();
    assert_eq!(status, 200, "{page}");
    let invitation = hidden_input(&page, "token").expect("the token field");
    let csrf = hidden_input(&page, "csrf").expect("a CSRF field");
    let landing = browser
        .submit(
            "/invitation",
            &[("token", &invitation), ("csrf", &csrf), ("password", PASSWORD), ("confirm", PASSWORD)],
        )
        .await;
    let Landing::Page { status, .. } = landing else { panic!("a page") };
    assert_eq!(status, 200);
    let shown = ae.call(Method::GET, &format!("/accounts/{emma}"), &ae.alice, None).await;
    assert_eq!(shown.body["account"]["status"], "active", "{:?}", shown.body);
    assert_eq!(shown.body["factors"]["password"], true);
    let (_, status, _) = browser.navigate(&path).await.page();
    assert_eq!(status, 410, "the link is single-use");

    // Invitation refusals.
    let patient = |email: &str, org: Option<&str>| json!({"kind": "patient", "email": email, "organisation_id": org});
    refused(&ae.invite(&ae.alice, patient("p1@example.org", Some(&b))).await, 403, "access_denied", "own organisation");
    refused(&ae.invite(&ae.alice, patient("p1@example.org", None)).await, 403, "access_denied", "name it");
    refused(
        &ae.invite(&ae.alice, json!({"kind": "administrator", "email": "root@example.org", "organisation_id": a}))
            .await,
        403,
        "access_denied",
        "administrators",
    );
    refused(&ae.invite(&ae.auditor, patient("p1@example.org", Some(&a))).await, 403, "access_denied", "read-only");
    refused(&ae.invite(&ae.alice, patient("not-an-email", Some(&a))).await, 400, "invalid_request", "email");
    refused(
        &ae.invite(&ae.alice, json!({"kind": "professional", "email": "x@example.org", "organisation_id": a})).await,
        400,
        "invalid_request",
        "id_nat",
    );
    refused(&ae.invite(&ae.platform, patient("p1@example.org", Some("nope"))).await, 404, "not_found", "organisation");
    let same_login =
        json!({"kind": "professional", "id_nat": "899700427885", "email": "e2@example.org", "organisation_id": a});
    refused(&ae.invite(&ae.alice, same_login).await, 409, "conflict", "login");

    // Search.
    let frank = ae.member("899700020029", "frank@example.org", &b).await;
    let mine = ae.search("", &ae.alice).await;
    assert_eq!(mine.status, 200, "{:?}", mine.body);
    assert_eq!(ids(&mine), vec![emma.clone(), ae.alice_id.clone()], "Alice's organisation, by login");
    refused(&ae.search(&format!("organisation={b}"), &ae.alice).await, 403, "access_denied", "own organisation");
    assert_eq!(ids(&ae.search(&format!("organisation={b}&kind=professional"), &ae.bob).await).len(), 2);
    let everyone = ae.search("limit=3", &ae.auditor).await;
    assert_eq!(everyone.body["items"].as_array().unwrap().len(), 3);
    let cursor = everyone.body["next_cursor"].as_str().expect("more accounts").to_string();
    let rest = ae.search(&format!("limit=50&cursor={cursor}"), &ae.auditor).await;
    assert!(rest.body["next_cursor"].is_null());
    assert_eq!(ids(&everyone).len() + ids(&rest).len(), 6, "4 role holders, Emma and Frank");
    assert_eq!(ids(&ae.search("q=EXPERT", &ae.platform).await), vec![emma.clone()], "by name");
    assert_eq!(ids(&ae.search("q=frank%40", &ae.platform).await), vec![frank.clone()], "by email");
    assert_eq!(ids(&ae.search("kind=administrator", &ae.platform).await).len(), 1);
    assert_eq!(ids(&ae.search("status=invited", &ae.platform).await), vec![frank.clone()]);
    refused(&ae.search("kind=robot", &ae.platform).await, 400, "invalid_request", "kind must be");
    refused(&ae.search("status=sleeping", &ae.platform).await, 400, "invalid_request", "status must be");

    // Show, disable, enable.
    refused(&ae.call(Method::GET, &format!("/accounts/{frank}"), &ae.alice, None).await, 403, "access_denied", "own");
    refused(&ae.call(Method::GET, "/accounts/nope", &ae.alice, None).await, 404, "not_found", "no such account");
    let disabled = ae.call(Method::POST, &format!("/accounts/{emma}/disable"), &ae.alice, None).await;
    assert_eq!(disabled.body["account"]["status"], "disabled", "{:?}", disabled.body);
    let enabled = ae.call(Method::POST, &format!("/accounts/{emma}/enable"), &ae.alice, None).await;
    assert_eq!(enabled.body["account"]["status"], "active", "{:?}", enabled.body);
    refused(
        &ae.call(Method::POST, &format!("/accounts/{frank}/disable"), &ae.alice, None).await,
        403,
        "access_denied",
        "own",
    );
    refused(
        &ae.call(Method::POST, &format!("/accounts/{emma}/disable"), &ae.auditor, None).await,
        403,
        "access_denied",
        "read-only",
    );
    // Alice is an administrator of A: another administrator of A cannot lock her out. (Carol is
    // activated by hand here: an invited account's token is refused.)
    let carol = ae.member("899700010012", "carol@example.org", &a).await;
    let activated = ae.call(Method::POST, &format!("/accounts/{carol}/enable"), &ae.platform, None).await;
    assert_eq!(activated.body["account"]["status"], "active", "{:?}", activated.body);
    let grant = json!({"account_id": carol, "role": "org_admin", "organisation_id": a});
    assert_eq!(ae.call(Method::POST, "/roles", &ae.platform, Some(&grant)).await.status, 201);
    let carol_token = admin_token(&ae.env, &carol, "admin");
    refused(
        &ae.call(Method::POST, &format!("/accounts/{}/disable", ae.alice_id), &carol_token, None).await,
        403,
        "access_denied",
        "accounts of administrators",
    );
    refused(
        &ae.call(Method::POST, &format!("/accounts/{}/disable", ae.platform_id), &ae.platform, None).await,
        400,
        "invalid_request",
        "your own account",
    );

    // Membership: only where both sides are the caller's.
    let join = |account: &str, org: &str| format!("/accounts/{account}/organisations/{org}");
    refused(&ae.call(Method::PUT, &join(&frank, &a), &ae.alice, None).await, 403, "access_denied", "own organisation");
    let moved = ae.call(Method::PUT, &join(&frank, &a), &ae.platform, Some(&json!({"department_id": "nope"}))).await;
    refused(&moved, 400, "invalid_request", "department_id");
    let joined = ae.call(Method::PUT, &join(&frank, &a), &ae.platform, None).await;
    assert_eq!(joined.body["organisations"].as_array().unwrap().len(), 2, "{:?}", joined.body);
    assert_eq!(ae.call(Method::DELETE, &join(&frank, &a), &ae.alice, None).await.status, 204);
    refused(&ae.call(Method::DELETE, &join(&frank, &a), &ae.alice, None).await, 404, "not_found", "not a member");

    let events = drain_audit(&mut audit);
    let changes: Vec<(String, String)> = events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AccountChanged { account_id, change, actor, .. } if *account_id == emma => {
                Some((change.clone(), actor.clone()))
            }
            _ => None,
        })
        .collect();
    let by_alice = format!("account:{}", ae.alice_id);
    assert_eq!(
        changes,
        vec![("invited".into(), by_alice.clone()), ("disabled".into(), by_alice.clone()), ("enabled".into(), by_alice)],
    );
    let denied = denials(&events);
    assert!(denied.contains(&(format!("account:{}", ae.alice_id), "write".into(), vec![b.clone()])), "{denied:?}");
    assert!(denied.contains(&(format!("account:{}", ae.alice_id), "read".into(), vec![b])), "{denied:?}");
}

async fn account_factors_and_sessions_are_reset_and_ended(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let mut audit = ae.env.state().audit.subscribe();
    let state = ae.env.state();
    let emma = ae.env.add_professional("899700427885", "Emma", "Expert", PASSWORD).await;
    let join = ae.call(Method::PUT, &format!("/accounts/{emma}/organisations/{}", ae.org_a), &ae.platform, None).await;
    assert_eq!(join.status, 200, "{:?}", join.body);
    habilis_e2e::enrol_totp(&ae.env, &emma, "emma").await;
    let now = habilis_idp::unix_now();
    let grant = habilis_idp::store::Grant {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: emma.clone(),
        client_id: CONSOLE_CLIENT.into(),
        session_id: Some("sid-1".into()),
        scope: "openid".into(),
        claims: "{}".into(),
        auth_time: now,
        created_at: now,
        expires_at: now + 3600,
        revoked_at: None,
    };
    state.store.insert_grant(&grant).await.expect("a grant");

    // Factors.
    let shown = ae.call(Method::GET, &format!("/accounts/{emma}"), &ae.auditor, None).await;
    assert_eq!(
        (shown.body["factors"]["password"].as_bool(), shown.body["factors"]["totp"].as_bool()),
        (Some(true), Some(true))
    );
    let reset = format!("/accounts/{emma}/factors/reset");
    refused(
        &ae.call(Method::POST, &reset, &ae.alice, Some(&json!({"factors": []}))).await,
        400,
        "invalid_request",
        "at least one",
    );
    refused(
        &ae.call(Method::POST, &reset, &ae.alice, Some(&json!({"factors": ["totp"], "invite": true}))).await,
        400,
        "invalid_request",
        "include password",
    );
    refused(
        &ae.call(Method::POST, &reset, &ae.alice, Some(&json!({"factors": ["fingerprint"]}))).await,
        400,
        "invalid_request",
        "unknown variant",
    );
    refused(
        &ae.call(Method::POST, &reset, &ae.bob, Some(&json!({"factors": ["totp"]}))).await,
        403,
        "access_denied",
        "own",
    );
    refused(
        &ae.call(Method::POST, &reset, &ae.auditor, Some(&json!({"factors": ["totp"]}))).await,
        403,
        "access_denied",
        "read-only",
    );
    refused(
        &ae.call(Method::POST, "/accounts/nope/factors/reset", &ae.alice, Some(&json!({"factors": ["totp"]}))).await,
        404,
        "not_found",
        "no such",
    );
    let done =
        ae.call(Method::POST, &reset, &ae.alice, Some(&json!({"factors": ["password", "totp"], "invite": true}))).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["factors"]["password"], false, "{:?}", done.body);
    assert_eq!(done.body["factors"]["totp"], false, "{:?}", done.body);
    let mail = ae.sink.wait_for("emma@example.org", MAIL_WAIT).await.expect("a new invitation");
    assert!(mail.text_body().unwrap_or_default().contains("/invitation?token="));

    // Sessions.
    let sessions = format!("/accounts/{emma}/sessions");
    let listed = ae.call(Method::GET, &sessions, &ae.auditor, None).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["items"][0]["grant_id"], grant.id.as_str());
    assert_eq!(listed.body["items"][0]["sid"], "sid-1");
    refused(&ae.call(Method::GET, &sessions, &ae.bob, None).await, 403, "access_denied", "own");
    refused(&ae.call(Method::DELETE, &sessions, &ae.auditor, None).await, 403, "access_denied", "read-only");
    let ended = ae.call(Method::DELETE, &sessions, &ae.alice, None).await;
    assert_eq!((ended.status, &ended.body), (200, &json!({"revoked_grants": 1})));
    let listed = ae.call(Method::GET, &sessions, &ae.alice, None).await;
    assert_eq!(listed.body["items"], json!([]));
    let revoked = state.store.grant_by_id(&grant.id).await.unwrap().expect("the grant");
    assert!(revoked.revoked_at.is_some());

    let events = drain_audit(&mut audit);
    let changes: Vec<(String, Option<String>, Option<String>)> = events
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::AccountChanged { change, before, after, .. } => {
                Some((change.clone(), before.clone(), after.clone()))
            }
            _ => None,
        })
        .filter(|(c, _, _)| c != "membership_added")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].0, "factors_reset");
    assert!(changes[0].1.as_deref().unwrap().contains("\"totp\":true"), "{changes:?}");
    assert!(changes[0].2.as_deref().unwrap().contains("\"totp\":false"), "{changes:?}");
    assert_eq!(changes[1].0, "sessions_killed");
}

/// The OpenAPI document parses as OpenAPI 3.1, and every route served under /api/admin/v1 is in
/// it with its method (and nothing else is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_lists_every_served_route() {
    let Some(env) = TestEnv::start(Storage::Embedded).await else { return };
    let http = backchannel_http();
    let response = http.get(env.url(&format!("{API_BASE}/openapi.json"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not a valid OpenAPI 3.1 document: {e}\n{text}"));
    let version = spec.validate_version().expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    let paths = spec.paths.clone().unwrap_or_default();
    let document: Value = serde_json::from_str(&text).unwrap();
    let mut documented = Vec::new();
    for (path, item) in &paths {
        for (method, operation) in item.methods() {
            documented.push((method.to_string(), path.clone()));
            // Bodies and responses resolve (every reference points at a defined component).
            operation.request_body(&spec).unwrap_or_else(|e| panic!("{method} {path}: request body: {e}"));
            for (status, response) in operation.responses(&spec) {
                for (media, content) in &response.content {
                    content.schema(&spec).unwrap_or_else(|e| panic!("{method} {path} {status} {media}: {e}"));
                }
            }
        }
    }
    documented.sort();
    let mut served = Vec::new();
    for route in habilis_idp::admin::routes() {
        // The route is really served: an anonymous call reaches its handler (401, or 200 for the
        // document itself), not the router's "no such endpoint".
        let call = answer(http.request(route.method.clone(), env.url(route.path)).send().await.unwrap()).await;
        assert_ne!(call.status, 404, "{} {} is not served: {:?}", route.method, route.path, call.body);
        assert_ne!(call.status, 405, "{} {} is not served", route.method, route.path);
        served.push((route.method.to_string(), route.path.to_string()));
        // Each operation documents its errors with the shared error schema (except the document).
        if route.path != habilis_idp::admin::openapi::PATH {
            let operation = &document["paths"][route.path][route.method.as_str().to_lowercase()];
            assert!(operation["responses"].as_object().is_some_and(|r| r.len() >= 2), "{operation}");
            assert_eq!(document["security"], json!([{"bearer": []}]));
        }
    }
    served.sort();
    assert_eq!(served, documented, "the routes served under {API_BASE} and the document's operations differ");
    // Every schema a response or body refers to is defined.
    for reference in text.match_indices("#/components/schemas/").map(|(i, _)| &text[i + 21..]) {
        let name: String = reference.chars().take_while(|c| *c != '"').collect();
        assert!(document["components"]["schemas"][&name].is_object(), "undefined schema {name}");
    }
}

/// Issue 19: the unlock story through the API. A member's login is locked by repeated failures:
/// the account shows until when; another organisation's administrator may not unlock it; its own
/// does, audited with the lock it lifted, and the account then shows no lock.
async fn a_locked_account_is_shown_and_unlocked_within_the_organisation(storage: Storage) {
    let Some(ae) = AdminEnv::start(storage).await else { return };
    let a = ae.org_a.clone();
    let carol = ae.member("899700010012", "carol@example.org", &a).await;
    let state = ae.env.state();
    let now = habilis_idp::unix_now();
    let lock_after_one = habilis_idp::authn::throttle::Throttle::new(habilis_idp::authn::throttle::ThrottlePolicy {
        max_failures: 1,
        lockout: Duration::from_secs(600),
        window: Duration::from_secs(600),
    });
    let scope = habilis_idp::authn::login::login_scope("899700010012");
    let failure = lock_after_one.record_failure(state.ephemeral.as_ref(), &scope, now).await.unwrap();
    assert!(failure.locked_until.is_some());

    let shown = ae.call(Method::GET, &format!("/accounts/{carol}"), &ae.alice, None).await;
    assert_eq!(shown.status, 200, "{:?}", shown.body);
    assert!(shown.body["locked_until"].as_i64().is_some_and(|until| until > now), "{:?}", shown.body);

    let mut audit = state.audit.subscribe();
    let foreign = ae.call(Method::POST, &format!("/accounts/{carol}/unlock"), &ae.bob, None).await;
    assert_eq!(foreign.status, 403, "{:?}", foreign.body);
    let unlocked = ae.call(Method::POST, &format!("/accounts/{carol}/unlock"), &ae.alice, None).await;
    assert_eq!(unlocked.status, 200, "{:?}", unlocked.body);
    assert_eq!(unlocked.body["locked_until"], Value::Null, "{:?}", unlocked.body);
    let shown = ae.call(Method::GET, &format!("/accounts/{carol}"), &ae.alice, None).await;
    assert_eq!(shown.body["locked_until"], Value::Null);
    assert!(lock_after_one.check(state.ephemeral.as_ref(), &scope, now).await.is_ok(), "the lock is gone");

    let lifted: Vec<_> = drain_audit(&mut audit)
        .into_iter()
        .filter_map(|r| match r.event {
            AuditEvent::AccountChanged { account_id, change, before, .. }
                if account_id == carol && change == "unlocked" =>
            {
                Some(before.unwrap_or_default())
            }
            _ => None,
        })
        .collect();
    assert_eq!(lifted.len(), 1, "one audited unlock: {lifted:?}");
    assert!(lifted[0].contains("locked_until") && !lifted[0].contains("null"), "{lifted:?}");
}
