//! The same storage tests run against SQLite and PostgreSQL (each test in its own database file or
//! schema, so they run in parallel).

use super::*;

/// A fresh SQLite store and, when reachable (always under CI), a fresh PostgreSQL one.
pub(crate) async fn test_stores() -> Vec<(SharedStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut stores = vec![(connect_with(&url, 4).await.expect("SQLite store"), Some(dir))];
    if let Some(url) = crate::testing::postgres_schema_url().await {
        stores.push((connect_with(&url, 4).await.expect("PostgreSQL store"), None));
    }
    stores
}

fn account(login: &str, id_nat: Option<&str>) -> Account {
    Account {
        id: uuid::Uuid::new_v4().to_string(),
        kind: AccountKind::Professional,
        login: login.into(),
        id_nat: id_nat.map(str::to_string),
        email: Some(format!("{login}@example.org")),
        given_name: Some("Kit".into()),
        family_name: Some("Doc".into()),
        status: AccountStatus::Active,
        locale: Some("fr".into()),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        last_authenticated_at: None,
    }
}

#[tokio::test]
async fn migrations_apply_from_empty_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    connect_with(&url, 2).await.unwrap();
    // Applying again on an up-to-date database is a no-op.
    connect_with(&url, 2).await.unwrap();
    if let Some(pg) = crate::testing::postgres_schema_url().await {
        connect_with(&pg, 2).await.unwrap();
        connect_with(&pg, 2).await.unwrap();
    }
}

#[tokio::test]
async fn accounts_round_trip_and_unique_logins() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        store.ping().await.unwrap();
        let a = account("899700427885", Some("899700427885"));
        store.insert_account(&a).await.unwrap();
        assert_eq!(store.account_by_id(&a.id).await.unwrap().as_ref(), Some(&a), "{backend}");
        assert_eq!(store.account_by_login("899700427885").await.unwrap().as_ref(), Some(&a), "{backend}");
        assert!(store.account_by_login("nobody").await.unwrap().is_none());
        let duplicate = account("899700427885", None);
        assert!(matches!(store.insert_account(&duplicate).await, Err(StoreError::Conflict { .. })), "{backend}");
        let same_idnat = account("other", Some("899700427885"));
        assert!(matches!(store.insert_account(&same_idnat).await, Err(StoreError::Conflict { .. })), "{backend}");
        assert!(store.set_account_status(&a.id, AccountStatus::Disabled, 1_700_000_100).await.unwrap());
        let updated = store.account_by_id(&a.id).await.unwrap().unwrap();
        assert_eq!(updated.status, AccountStatus::Disabled);
        assert_eq!(updated.updated_at, 1_700_000_100);
        assert!(!store.set_account_status("missing", AccountStatus::Active, 0).await.unwrap());
        store.insert_account(&account("second", None)).await.unwrap();
        let listed = store.list_accounts(10, 0).await.unwrap();
        assert_eq!(listed.len(), 2, "{backend}");
        assert_eq!(store.list_accounts(1, 1).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn credentials_replace_and_cascade() {
    for (store, _guard) in test_stores().await {
        let a = account("patient@example.org", None);
        store.insert_account(&a).await.unwrap();
        let cred = |id: &str, secret: &[u8]| Credential {
            id: id.into(),
            account_id: a.id.clone(),
            kind: "password".into(),
            name: None,
            secret: secret.to_vec(),
            created_at: 1,
            last_used_at: None,
        };
        store.insert_credential(&cred("c1", b"hash-1")).await.unwrap();
        store.replace_credentials(&cred("c2", b"hash-2\x00\xff")).await.unwrap();
        let creds = store.credentials_of(&a.id, "password").await.unwrap();
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].secret, b"hash-2\x00\xff".to_vec(), "binary secrets survive both backends");
        assert!(store.credentials_of(&a.id, "totp").await.unwrap().is_empty());
        let orphan = Credential { account_id: "no-such-account".into(), ..cred("c3", b"x") };
        assert!(store.insert_credential(&orphan).await.is_err(), "foreign keys are enforced");
    }
}

#[tokio::test]
async fn invitations_are_single_use_and_expire() {
    for (store, _guard) in test_stores().await {
        let a = account("invited@example.org", None);
        store.insert_account(&a).await.unwrap();
        let inv =
            Invitation { token_hash: "h1".into(), account_id: a.id.clone(), expires_at: 2_000, created_at: 1_000 };
        store.insert_invitation(&inv).await.unwrap();
        store.insert_invitation(&Invitation { token_hash: "h2".into(), ..inv.clone() }).await.unwrap();
        assert_eq!(
            store.invitation("h1").await.unwrap().map(|i| i.account_id),
            Some(a.id.clone()),
            "peeking does not consume"
        );
        // Concurrent takers: exactly one wins.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.take_invitation("h1", 1_500).await.unwrap() }));
        }
        let mut winners = 0;
        for t in tasks {
            if t.await.unwrap().is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "{}", store.backend().as_str());
        // Expired: consumed but not returned.
        assert!(store.take_invitation("h2", 2_500).await.unwrap().is_none());
        assert!(store.take_invitation("h2", 1_500).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn clients_upsert_list_delete_and_version() {
    for (store, _guard) in test_stores().await {
        assert_eq!(store.clients_version().await.unwrap(), (0, 0));
        let c = ClientRecord {
            client_id: "teleconsult".into(),
            metadata: r#"{"redirect_uris":["https://app.example/cb"]}"#.into(),
            secret_hash: Some("abc".into()),
            created_at: 10,
            updated_at: 10,
        };
        store.upsert_client(&c).await.unwrap();
        assert_eq!(store.client_by_id("teleconsult").await.unwrap(), Some(c.clone()));
        let changed = ClientRecord { metadata: "{}".into(), secret_hash: None, updated_at: 20, ..c.clone() };
        store.upsert_client(&changed).await.unwrap();
        let got = store.client_by_id("teleconsult").await.unwrap().unwrap();
        assert_eq!(got.metadata, "{}");
        assert_eq!(got.secret_hash, None);
        assert_eq!(got.created_at, 10, "creation time is kept on update");
        assert_eq!(store.clients_version().await.unwrap(), (1, 20));
        assert_eq!(store.list_clients().await.unwrap().len(), 1);
        assert!(store.delete_client("teleconsult").await.unwrap());
        assert!(!store.delete_client("teleconsult").await.unwrap());
        assert!(store.client_by_id("teleconsult").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn signing_keys_retire_and_purge() {
    for (store, _guard) in test_stores().await {
        let key = |kid: &str, activates_at| SigningKeyRecord {
            kid: kid.into(),
            alg: "ES256".into(),
            public_jwk: "{}".into(),
            private_sealed: vec![1, 2, 3],
            created_at: 100,
            activates_at,
            retired_at: None,
        };
        store.insert_signing_key(&key("b", 200)).await.unwrap();
        store.insert_signing_key(&key("a", 100)).await.unwrap();
        assert!(matches!(store.insert_signing_key(&key("a", 100)).await, Err(StoreError::Conflict { .. })));
        let kids: Vec<String> = store.list_signing_keys().await.unwrap().into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, vec!["a", "b"], "ordered by activation");
        assert!(store.retire_signing_key("a", 300).await.unwrap());
        assert!(!store.retire_signing_key("a", 400).await.unwrap(), "retiring twice keeps the first time");
        assert_eq!(store.purge_signing_keys(300).await.unwrap(), 0);
        assert_eq!(store.purge_signing_keys(301).await.unwrap(), 1);
        assert_eq!(store.list_signing_keys().await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn refresh_tokens_are_spent_once_and_grants_revoke() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        let a = account("refresh@example.org", None);
        store.insert_account(&a).await.unwrap();
        store
            .upsert_client(&ClientRecord {
                client_id: "app".into(),
                metadata: "{}".into(),
                secret_hash: None,
                created_at: 1,
                updated_at: 1,
            })
            .await
            .unwrap();
        let grant = Grant {
            id: "g1".into(),
            account_id: a.id.clone(),
            client_id: "app".into(),
            session_id: Some("s1".into()),
            scope: "openid offline_access".into(),
            claims: r#"{"acr":"eidas1"}"#.into(),
            auth_time: 100,
            created_at: 100,
            expires_at: 10_000,
            revoked_at: None,
        };
        store.insert_grant(&grant).await.unwrap();
        store.insert_grant(&Grant { id: "g2".into(), ..grant.clone() }).await.unwrap();
        assert_eq!(store.grant_by_id("g1").await.unwrap(), Some(grant.clone()));
        let rt = RefreshToken {
            token_hash: "t1".into(),
            grant_id: "g1".into(),
            created_at: 100,
            expires_at: 2_000,
            used_at: None,
        };
        store.insert_refresh_token(&rt).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.use_refresh_token("t1", 200).await.unwrap() }));
        }
        let (mut fresh, mut reused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                RefreshUse::Fresh(_) => fresh += 1,
                RefreshUse::Reused(token) => {
                    assert_eq!(token.used_at, Some(200));
                    reused += 1
                }
                RefreshUse::Unknown => panic!("known token reported unknown"),
            }
        }
        assert_eq!((fresh, reused), (1, 19), "{backend}");
        assert_eq!(store.use_refresh_token("nope", 200).await.unwrap(), RefreshUse::Unknown);
        assert!(store.revoke_grant("g1", 300).await.unwrap());
        assert!(!store.revoke_grant("g1", 400).await.unwrap());
        assert_eq!(store.grant_by_id("g1").await.unwrap().unwrap().revoked_at, Some(300));
        let revoked = store.revoke_session_grants("s1", 500).await.unwrap();
        assert_eq!(revoked.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(), vec!["g2"], "{backend}");
    }
}

#[tokio::test]
async fn consents_upsert_and_delete() {
    for (store, _guard) in test_stores().await {
        let a = account("consent@example.org", None);
        store.insert_account(&a).await.unwrap();
        store
            .upsert_client(&ClientRecord {
                client_id: "third".into(),
                metadata: "{}".into(),
                secret_hash: None,
                created_at: 1,
                updated_at: 1,
            })
            .await
            .unwrap();
        assert!(store.consent(&a.id, "third").await.unwrap().is_none());
        let c = Consent {
            account_id: a.id.clone(),
            client_id: "third".into(),
            scope: "openid".into(),
            created_at: 1,
            updated_at: 1,
        };
        store.upsert_consent(&c).await.unwrap();
        store.upsert_consent(&Consent { scope: "openid email".into(), updated_at: 2, ..c.clone() }).await.unwrap();
        let got = store.consent(&a.id, "third").await.unwrap().unwrap();
        assert_eq!((got.scope.as_str(), got.created_at, got.updated_at), ("openid email", 1, 2));
        assert_eq!(store.consents_of(&a.id).await.unwrap().len(), 1);
        assert!(store.delete_consent(&a.id, "third").await.unwrap());
        assert!(store.consents_of(&a.id).await.unwrap().is_empty());
        assert!(!store.delete_consent(&a.id, "third").await.unwrap());
    }
}

#[tokio::test]
async fn rotation_spends_and_replaces_in_one_step() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        let a = account("rotate@example.org", None);
        store.insert_account(&a).await.unwrap();
        store
            .upsert_client(&ClientRecord {
                client_id: "app".into(),
                metadata: "{}".into(),
                secret_hash: None,
                created_at: 1,
                updated_at: 1,
            })
            .await
            .unwrap();
        let grant = Grant {
            id: "g".into(),
            account_id: a.id.clone(),
            client_id: "app".into(),
            session_id: None,
            scope: "openid offline_access".into(),
            claims: "{}".into(),
            auth_time: 1,
            created_at: 1,
            expires_at: 10_000,
            revoked_at: None,
        };
        store.insert_grant(&grant).await.unwrap();
        let first = RefreshToken {
            token_hash: "r0".into(),
            grant_id: "g".into(),
            created_at: 1,
            expires_at: 5_000,
            used_at: None,
        };
        store.insert_refresh_token(&first).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let successor = RefreshToken {
                    token_hash: format!("r1-{i}"),
                    grant_id: "g".into(),
                    created_at: 2,
                    expires_at: 5_000,
                    used_at: None,
                };
                (i, store.rotate_refresh_token("r0", 2, &successor).await.unwrap())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (i, outcome) = t.await.unwrap();
            match outcome {
                RefreshUse::Fresh(_) => winners.push(i),
                RefreshUse::Reused(_) => {}
                RefreshUse::Unknown => panic!("known token reported unknown"),
            }
        }
        assert_eq!(winners.len(), 1, "{backend}");
        for i in 0..12 {
            let exists = store.refresh_token(&format!("r1-{i}")).await.unwrap().is_some();
            assert_eq!(exists, winners.contains(&i), "{backend}: only the winner's successor is stored");
        }
        assert_eq!(store.rotate_refresh_token("nope", 3, &first).await.unwrap(), RefreshUse::Unknown);
        let context = store.refresh_context("r0").await.unwrap().expect("token with its grant");
        assert_eq!((context.token.grant_id.as_str(), context.token.used_at), ("g", Some(2)));
        assert_eq!(context.grant, grant, "{backend}");
        assert_eq!(context.account, a, "{backend}");
        assert!(store.refresh_context("nope").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn checked_rotation_spends_only_a_valid_token_of_its_client() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        let a = account("checked@example.org", None);
        store.insert_account(&a).await.unwrap();
        for client_id in ["app", "other"] {
            let record = ClientRecord {
                client_id: client_id.into(),
                metadata: "{}".into(),
                secret_hash: None,
                created_at: 1,
                updated_at: 1,
            };
            store.upsert_client(&record).await.unwrap();
        }
        let grant = |id: &str, expires_at: i64| Grant {
            id: id.into(),
            account_id: a.id.clone(),
            client_id: "app".into(),
            session_id: None,
            scope: "openid offline_access".into(),
            claims: "{}".into(),
            auth_time: 1,
            created_at: 1,
            expires_at,
            revoked_at: None,
        };
        let token = |hash: &str, grant_id: &str, expires_at: i64| RefreshToken {
            token_hash: hash.into(),
            grant_id: grant_id.into(),
            created_at: 1,
            expires_at,
            used_at: None,
        };
        store.insert_grant(&grant("g", 10_000)).await.unwrap();
        store.insert_grant(&grant("short", 3_000)).await.unwrap();
        store.insert_refresh_token(&token("r0", "g", 5_000)).await.unwrap();
        store.insert_refresh_token(&token("old", "g", 100)).await.unwrap();
        store.insert_refresh_token(&token("s0", "short", 2_900)).await.unwrap();

        // Another client's token, an expired one, an unknown one: refused, nothing written.
        assert!(store.rotate_refresh_token_checked("r0", "other", 50, "x1", 2_000).await.unwrap().is_none());
        assert!(store.rotate_refresh_token_checked("old", "app", 200, "x2", 2_000).await.unwrap().is_none());
        assert!(store.rotate_refresh_token_checked("nope", "app", 50, "x3", 2_000).await.unwrap().is_none());
        for hash in ["x1", "x2", "x3"] {
            assert!(store.refresh_token(hash).await.unwrap().is_none(), "{backend}: {hash} must not be stored");
        }
        assert_eq!(store.refresh_token("r0").await.unwrap().unwrap().used_at, None, "{backend}: left unspent");

        // Of concurrent spends, exactly one wins; it gets the grant, the account and its successor.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                (i, store.rotate_refresh_token_checked("r0", "app", 60, &format!("r1-{i}"), 2_000).await.unwrap())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            if let (i, Some(context)) = t.await.unwrap() {
                assert_eq!(context.grant, grant("g", 10_000), "{backend}");
                assert_eq!(context.account, a, "{backend}");
                assert_eq!(context.token.token_hash, format!("r1-{i}"), "{backend}: the successor");
                assert_eq!((context.token.created_at, context.token.expires_at), (60, 2_000), "{backend}");
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "{backend}");
        for i in 0..8 {
            let exists = store.refresh_token(&format!("r1-{i}")).await.unwrap().is_some();
            assert_eq!(exists, winners.contains(&i), "{backend}: only the winner's successor is stored");
        }
        assert_eq!(store.refresh_token("r0").await.unwrap().unwrap().used_at, Some(60), "{backend}: spent");

        // The successor's idle expiry is capped by the end of its family.
        let capped = store.rotate_refresh_token_checked("s0", "app", 70, "s1", 5_000).await.unwrap().unwrap();
        assert_eq!(capped.token.expires_at, 3_000, "{backend}");

        // A revoked family and a disabled account spend nothing.
        let live = format!("r1-{}", winners[0]);
        store.revoke_grant("short", 80).await.unwrap();
        assert!(store.rotate_refresh_token_checked("s1", "app", 90, "s2", 5_000).await.unwrap().is_none());
        store.set_account_status(&a.id, AccountStatus::Disabled, 90).await.unwrap();
        assert!(store.rotate_refresh_token_checked(&live, "app", 95, "r2", 2_000).await.unwrap().is_none());
        assert_eq!(store.refresh_token(&live).await.unwrap().unwrap().used_at, None, "{backend}: left unspent");
    }
}

#[tokio::test]
async fn habilitation_records_round_trip_on_both_backends() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        let h = store.habilitations();
        let pro = account("899700427885", Some("899700427885"));
        store.insert_account(&pro).await.unwrap();
        let ins = PatientIdentity::Ins { value: "284037512345640".into(), oid: "1.2.250.1.213.1.4.8".into() };
        let patient = Patient { id: "pat-1".into(), identity: ins.clone(), account_id: None, created_at: 1 };
        h.insert_patient(&patient).await.unwrap();
        let twin = Patient { id: "pat-2".into(), ..patient.clone() };
        assert!(matches!(h.insert_patient(&twin).await, Err(StoreError::Conflict { .. })), "{backend}: INS unique");
        let local = PatientIdentity::Local { local_id: "P-1".into(), namespace: "app".into() };
        h.insert_patient(&Patient { id: "pat-3".into(), identity: local.clone(), account_id: None, created_at: 1 })
            .await
            .unwrap();
        assert_eq!(h.patient_by_identity(&ins).await.unwrap().map(|p| p.id), Some("pat-1".into()), "{backend}");
        assert_eq!(h.patient_by_identity(&local).await.unwrap().map(|p| p.id), Some("pat-3".into()), "{backend}");
        assert!(h.link_patient_account(&patient.id, &pro.id).await.unwrap());
        assert!(!h.link_patient_account(&patient.id, &pro.id).await.unwrap(), "{backend}: first link wins");

        let relationship = Relationship {
            id: "rel-1".into(),
            professional_id: pro.id.clone(),
            patient_id: patient.id.clone(),
            kind: "treating".into(),
            organisation_id: None,
            valid_from: 10,
            valid_until: None,
            status: RelationshipStatus::Active,
            source_client: Some("app".into()),
            source_actor: "client:app".into(),
            evidence: "{}".into(),
            created_at: 10,
            updated_at: 10,
            revoked_at: None,
            revoked_by: None,
        };
        h.insert_relationship(&relationship).await.unwrap();
        // One read for several patients, the professional named by id or by login; each
        // relationship comes with the identity it matched.
        let both = [local.clone(), ins.clone()];
        let found = |identity: &PatientIdentity| RelationshipMatch {
            identity: identity.clone(),
            relationship: relationship.clone(),
            assigned_profiles: Vec::new(),
        };
        let by_id = h.relationships_with_patients(ProfessionalKey::AccountId(&pro.id), &both, false).await.unwrap();
        assert_eq!(by_id, vec![found(&ins)], "{backend}");
        let just_ins = [ins.clone()];
        let by_login =
            h.relationships_with_patients(ProfessionalKey::Login("899700427885"), &just_ins, true).await.unwrap();
        assert_eq!(by_login, vec![found(&ins)], "{backend}: no assignment");
        assert!(
            h.relationships_with_patients(ProfessionalKey::AccountId(&pro.id), std::slice::from_ref(&local), false)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            h.relationships_with_patients(ProfessionalKey::Login("nobody"), std::slice::from_ref(&ins), false)
                .await
                .unwrap()
                .is_empty()
        );
        store.set_account_status(&pro.id, AccountStatus::Disabled, 11).await.unwrap();
        let disabled =
            h.relationships_with_patients(ProfessionalKey::Login("899700427885"), &just_ins, false).await.unwrap();
        assert!(disabled.is_empty(), "{backend}: a disabled professional has no relationship by login");
        store.set_account_status(&pro.id, AccountStatus::Active, 12).await.unwrap();
        assert!(h.expire_relationship("rel-1", 100, 50).await.unwrap());
        let expired = h.relationship("rel-1").await.unwrap().unwrap();
        assert_eq!(expired.status_at(99), RelationshipStatus::Active, "{backend}");
        assert_eq!(expired.status_at(100), RelationshipStatus::Expired, "{backend}");
        assert!(h.revoke_relationship("rel-1", "account:x", 60).await.unwrap());
        assert!(!h.revoke_relationship("rel-1", "account:x", 61).await.unwrap(), "{backend}: once");
        let revoked = h.relationship("rel-1").await.unwrap().unwrap();
        assert_eq!((revoked.status, revoked.revoked_by.as_deref()), (RelationshipStatus::Revoked, Some("account:x")));
        let listed = h
            .list_relationships(&RelationshipFilter {
                patient_id: Some(patient.id.clone()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{backend}");

        h.upsert_practice(&pro.id, r#"{"exercices":[]}"#, 5).await.unwrap();
        h.upsert_practice(&pro.id, r#"{"exercices":[{"codeProfession":"10"}]}"#, 6).await.unwrap();
        assert!(h.practice_of(&pro.id).await.unwrap().unwrap().contains("10"), "{backend}");

        assert_eq!(h.profiles_version().await.unwrap(), (0, 0));
        let profile = ProfileRecord {
            name: "p".into(),
            description: "d".into(),
            spec: "{}".into(),
            max_duration: None,
            created_at: 1,
            updated_at: 2,
        };
        h.upsert_profile(&profile).await.unwrap();
        h.upsert_profile(&ProfileRecord { description: "d2".into(), updated_at: 3, ..profile.clone() }).await.unwrap();
        assert_eq!(h.profiles().await.unwrap()[0].description, "d2", "{backend}");
        assert_eq!(h.profiles_version().await.unwrap(), (1, 3), "{backend}");
        assert!(h.delete_profile("p").await.unwrap());
        assert_eq!(h.profiles_version().await.unwrap().0, 0, "{backend}");
    }
}

#[tokio::test]
async fn profile_assignments_are_unique_scoped_and_read_with_relationships() {
    for (store, _guard) in test_stores().await {
        let backend = store.backend().as_str();
        let h = store.habilitations();
        let pro = account("899700427885", Some("899700427885"));
        store.insert_account(&pro).await.unwrap();
        for org in ["org-1", "org-2"] {
            let organisation = Organisation {
                id: org.into(),
                name: org.into(),
                identifier_type: None,
                identifier: None,
                created_at: 1,
            };
            h.insert_organisation(&organisation).await.unwrap();
        }
        for name in ["nurse", "coordinator"] {
            let profile = ProfileRecord {
                name: name.into(),
                description: String::new(),
                spec: "{}".into(),
                max_duration: None,
                created_at: 1,
                updated_at: 1,
            };
            h.upsert_profile(&profile).await.unwrap();
        }
        let mut patients = Vec::new();
        for (i, org) in [Some("org-1"), None, Some("org-2")].into_iter().enumerate() {
            let identity = PatientIdentity::Local { local_id: format!("P-{i}"), namespace: "app".into() };
            let patient_id = format!("pat-{i}");
            h.insert_patient(&Patient {
                id: patient_id.clone(),
                identity: identity.clone(),
                account_id: None,
                created_at: 1,
            })
            .await
            .unwrap();
            let relationship = Relationship {
                id: format!("rel-{i}"),
                professional_id: pro.id.clone(),
                patient_id,
                kind: "treating".into(),
                organisation_id: org.map(str::to_owned),
                valid_from: 10,
                valid_until: None,
                status: RelationshipStatus::Active,
                source_client: None,
                source_actor: "test".into(),
                evidence: "{}".into(),
                created_at: 10 + i as i64,
                updated_at: 10,
                revoked_at: None,
                revoked_by: None,
            };
            h.insert_relationship(&relationship).await.unwrap();
            patients.push(identity);
        }
        let assignment = |profile: &str, org: Option<&str>| ProfileAssignment {
            account_id: pro.id.clone(),
            profile_name: profile.into(),
            organisation_id: org.map(str::to_owned),
            assigned_by: "account:admin".into(),
            assigned_at: 20,
        };
        assert!(h.assign_profile(&assignment("nurse", None)).await.unwrap(), "{backend}");
        assert!(h.assign_profile(&assignment("coordinator", Some("org-1"))).await.unwrap(), "{backend}");
        let again = ProfileAssignment { assigned_by: "account:other".into(), ..assignment("nurse", None) };
        assert!(!h.assign_profile(&again).await.unwrap(), "{backend}: a platform-wide assignment is held once");
        assert!(!h.assign_profile(&assignment("coordinator", Some("org-1"))).await.unwrap(), "{backend}");

        // Each relationship gets the assignments that hold for its organisation, in the same read.
        let key = ProfessionalKey::AccountId(&pro.id);
        let assigned = |matches: Vec<RelationshipMatch>| {
            matches.into_iter().map(|m| (m.relationship.id, m.assigned_profiles)).collect::<Vec<_>>()
        };
        let strings = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            assigned(h.relationships_with_patients(key, &patients, true).await.unwrap()),
            vec![
                ("rel-0".to_string(), strings(&["coordinator", "nurse"])),
                ("rel-1".to_string(), strings(&["nurse"])),
                ("rel-2".to_string(), strings(&["nurse"])),
            ],
            "{backend}"
        );
        let by_login = h.relationships_with_patients(ProfessionalKey::Login("899700427885"), &patients, true);
        assert_eq!(assigned(by_login.await.unwrap())[0].1, strings(&["coordinator", "nurse"]), "{backend}");
        assert!(
            h.relationships_with_patients(key, &patients, false)
                .await
                .unwrap()
                .iter()
                .all(|m| m.assigned_profiles.is_empty()),
            "{backend}: not read unless asked for"
        );

        assert_eq!(
            h.assignments_of_account(&pro.id).await.unwrap(),
            vec![assignment("coordinator", Some("org-1")), assignment("nurse", None)]
        );
        assert!(h.assign_profile(&assignment("coordinator", Some("org-2"))).await.unwrap());
        let holders = h.assignments_of_profile("coordinator", 10, 0).await.unwrap();
        assert_eq!(
            holders.iter().map(|a| a.organisation_id.as_deref()).collect::<Vec<_>>(),
            [Some("org-1"), Some("org-2")]
        );
        assert_eq!(
            h.assignments_of_profile("coordinator", 1, 1).await.unwrap(),
            vec![assignment("coordinator", Some("org-2"))]
        );

        assert!(!h.unassign_profile(&pro.id, "nurse", Some("org-1")).await.unwrap(), "{backend}: another scope");
        assert!(h.unassign_profile(&pro.id, "nurse", None).await.unwrap(), "{backend}");
        assert!(!h.unassign_profile(&pro.id, "nurse", None).await.unwrap(), "{backend}: once");
        assert!(h.unassign_profile(&pro.id, "coordinator", Some("org-1")).await.unwrap(), "{backend}");
        assert_eq!(h.assignments_of_account(&pro.id).await.unwrap(), vec![assignment("coordinator", Some("org-2"))]);
        assert_eq!(
            assigned(h.relationships_with_patients(key, &patients, true).await.unwrap()),
            vec![
                ("rel-0".to_string(), Vec::new()),
                ("rel-1".to_string(), Vec::new()),
                ("rel-2".to_string(), strings(&["coordinator"])),
            ],
            "{backend}"
        );

        // A deleted profile takes its assignments along: re-created, it has no holder.
        assert!(h.delete_profile("coordinator").await.unwrap());
        assert!(h.assignments_of_profile("coordinator", 10, 0).await.unwrap().is_empty(), "{backend}");
        assert!(h.assignments_of_account(&pro.id).await.unwrap().is_empty(), "{backend}");
    }
}
