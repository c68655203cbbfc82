use super::*;
use crate::store::{
    AccountKind, AccountStatus, ClientRecord, Consent, Credential, Grant, Membership, Organisation, Patient,
    PatientIdentity, Relationship, WebauthnCredential,
};

const PHC: &str = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$SECRETHASHVALUE";
const PASSKEY: &str = "{\"cred\":\"PRIVATE-PASSKEY-MATERIAL\"}";

struct Fixture {
    pro: Account,
    patient_account: Account,
    patient_id: String,
    relationship_id: String,
}

fn account(kind: AccountKind, login: &str, id_nat: Option<&str>) -> Account {
    Account {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        login: login.into(),
        id_nat: id_nat.map(str::to_string),
        email: Some(format!("{login}@example.org")),
        given_name: Some("Camille".into()),
        family_name: Some("Durand".into()),
        status: AccountStatus::Active,
        locale: Some("fr".into()),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        last_authenticated_at: Some(1_700_000_100),
    }
}

/// A professional with a factor of each kind, a consent, a grant, a membership, practice data and
/// a relationship with a patient whose record is linked to a patient account.
async fn fixture(state: &AppState) -> Fixture {
    let store = &state.store;
    let now = crate::unix_now();
    let pro = account(AccountKind::Professional, "899700427885", Some("899700427885"));
    let patient_account = account(AccountKind::Patient, "patient", None);
    store.insert_account(&pro).await.unwrap();
    store.insert_account(&patient_account).await.unwrap();
    store.insert_credential(&Credential::password(&pro.id, PHC.into(), now)).await.unwrap();
    store
        .insert_webauthn_credential(&WebauthnCredential {
            credential_id: "cred-1".into(),
            account_id: pro.id.clone(),
            name: "YubiKey".into(),
            passkey: PASSKEY.into(),
            created_at: now,
            last_used_at: None,
        })
        .await
        .unwrap();
    store
        .upsert_client(&ClientRecord {
            client_id: "app".into(),
            metadata: "{}".into(),
            secret_hash: None,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    store
        .upsert_consent(&Consent {
            account_id: pro.id.clone(),
            client_id: "app".into(),
            scope: "openid profile".into(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    store
        .insert_grant(&Grant {
            id: uuid::Uuid::new_v4().to_string(),
            account_id: pro.id.clone(),
            client_id: "app".into(),
            session_id: None,
            scope: "openid".into(),
            claims: "{}".into(),
            auth_time: now,
            created_at: now,
            expires_at: now + 3600,
            revoked_at: None,
        })
        .await
        .unwrap();
    let h = store.habilitations();
    h.insert_organisation(&Organisation {
        id: "org-1".into(),
        name: "Clinique".into(),
        identifier_type: None,
        identifier: None,
        created_at: now,
    })
    .await
    .unwrap();
    store
        .admin()
        .upsert_membership(&Membership {
            account_id: pro.id.clone(),
            organisation_id: "org-1".into(),
            department_id: None,
            created_at: now,
        })
        .await
        .unwrap();
    h.upsert_practice(&pro.id, "{\"professions\":[{\"code\":\"10\"}]}", now).await.unwrap();
    let patient = Patient {
        id: uuid::Uuid::new_v4().to_string(),
        identity: PatientIdentity::Local { local_id: "p-42".into(), namespace: "app".into() },
        account_id: None,
        created_at: now,
    };
    h.insert_patient(&patient).await.unwrap();
    assert!(h.link_patient_account(&patient.id, &patient_account.id).await.unwrap());
    let relationship = Relationship {
        id: uuid::Uuid::new_v4().to_string(),
        professional_id: pro.id.clone(),
        patient_id: patient.id.clone(),
        kind: "treating".into(),
        organisation_id: None,
        valid_from: now,
        valid_until: None,
        status: RelationshipStatus::Active,
        source_client: Some("app".into()),
        source_actor: "client:app".into(),
        evidence: "{}".into(),
        created_at: now,
        updated_at: now,
        revoked_at: None,
        revoked_by: None,
    };
    h.insert_relationship(&relationship).await.unwrap();
    Fixture { pro, patient_account, patient_id: patient.id, relationship_id: relationship.id }
}

#[test]
fn identifiers_cover_every_name_of_the_account() {
    let a = account(AccountKind::Professional, "899700427885", Some("899700427885"));
    let ids = identifiers(&a);
    assert!(ids.contains(&a.id) && ids.contains(&"899700427885".to_string()));
    assert!(ids.contains(&"899700427885@example.org".to_string()));
    assert_eq!(ids.len(), 3, "login and idNat are the same string: {ids:?}");
    assert!(new_pseudonym().starts_with("pseudonym:") && new_pseudonym() != new_pseudonym());
}

#[tokio::test]
async fn export_has_every_section_and_no_secret() {
    for (state, _dir) in crate::lifecycle::tests::test_states().await {
        let backend = state.store.backend().as_str();
        let f = fixture(&state).await;
        let mut events = state.audit.subscribe();
        let data = export(&state, &f.pro.id, "cli", AuditContext::default()).await.unwrap();
        let json = serde_json::to_value(&data).unwrap();
        for section in [
            "account",
            "factors",
            "passkeys",
            "consents",
            "grants",
            "organisations",
            "roles",
            "practice",
            "relationships",
            "patients",
            "inactivity",
            "audit",
        ] {
            assert!(json.get(section).is_some(), "{backend}: no {section}");
        }
        assert_eq!(json["account"]["login"], "899700427885");
        assert_eq!(json["factors"][0]["kind"], "password", "{backend}");
        assert_eq!(json["passkeys"][0]["name"], "YubiKey");
        assert_eq!(json["consents"][0]["client_id"], "app");
        assert_eq!(json["grants"][0]["scope"], "openid");
        assert_eq!(json["organisations"][0]["organisation_id"], "org-1");
        assert_eq!(json["practice"]["professions"][0]["code"], "10");
        assert_eq!(json["relationships"][0]["id"], f.relationship_id.as_str(), "{backend}");
        assert_eq!(json["inactivity"]["activity_at"], 1_700_000_100);
        let text = json.to_string();
        assert!(!text.contains("SECRETHASHVALUE") && !text.contains("argon2"), "{backend}: a hash leaked");
        assert!(!text.contains("PRIVATE-PASSKEY-MATERIAL"), "{backend}: passkey material leaked");
        let exported = events.recv().await.unwrap();
        assert_eq!(exported.event.name(), "person_exported");
        assert_eq!(exported.event.subject(), Some(f.pro.id.as_str()));

        // The patient's export shows their record and the relationship held on it.
        let patient = export(&state, &f.patient_account.id, "cli", AuditContext::default()).await.unwrap();
        let patient = serde_json::to_value(&patient).unwrap();
        assert_eq!(patient["patients"][0]["id"], f.patient_id.as_str(), "{backend}");
        assert_eq!(patient["patients"][0]["identity"]["local_id"], "p-42");
        assert_eq!(patient["patients"][0]["relationships"][0]["id"], f.relationship_id.as_str());
        assert!(matches!(export(&state, "nobody", "cli", AuditContext::default()).await, Err(PersonError::NotFound)));
    }
}

#[tokio::test]
async fn deletion_ends_relationships_and_removes_everything_of_the_account() {
    for (state, _dir) in crate::lifecycle::tests::test_states().await {
        let backend = state.store.backend().as_str();
        let f = fixture(&state).await;
        let mut events = state.audit.subscribe();
        let deletion =
            delete_person(&state, &f.pro, DeletionReason::Erasure, "cli", AuditContext::default()).await.unwrap();
        assert_eq!((deletion.relationships_ended, deletion.grants_revoked), (1, 1), "{backend}");
        let mut names = Vec::new();
        while let Ok(record) = events.try_recv() {
            names.push((record.event.name(), record.event.subject().map(str::to_string)));
        }
        assert_eq!(
            names,
            vec![
                ("relationship_ended", None),
                ("account_deleted", Some(deletion.pseudonym.clone())),
                ("person_erased", Some(deletion.pseudonym.clone())),
            ],
            "{backend}"
        );
        let store = &state.store;
        assert!(store.account_by_id(&f.pro.id).await.unwrap().is_none(), "{backend}");
        assert!(store.credentials_of(&f.pro.id, "password").await.unwrap().is_empty());
        assert!(store.webauthn_credentials_of(&f.pro.id).await.unwrap().is_empty());
        assert!(store.consents_of(&f.pro.id).await.unwrap().is_empty());
        assert!(store.lifecycle().grants_of(&f.pro.id).await.unwrap().is_empty());
        assert!(store.admin().memberships_of(&f.pro.id).await.unwrap().is_empty());
        assert!(store.habilitations().practice_of(&f.pro.id).await.unwrap().is_none());
        assert!(store.habilitations().relationship(&f.relationship_id).await.unwrap().is_none(), "{backend}");
        // The patient account and its record stay.
        assert!(store.account_by_id(&f.patient_account.id).await.unwrap().is_some());
        assert!(store.habilitations().patient_by_id(&f.patient_id).await.unwrap().is_some());
        // Deleting the patient account unlinks its record (kept for the professionals' apps).
        delete_person(&state, &f.patient_account, DeletionReason::Inactive, "scheduler", AuditContext::default())
            .await
            .unwrap();
        let record = store.habilitations().patient_by_id(&f.patient_id).await.unwrap().expect("kept");
        assert_eq!(record.account_id, None, "{backend}");
        assert!(matches!(
            delete_person(&state, &f.pro, DeletionReason::Erasure, "cli", AuditContext::default()).await,
            Err(PersonError::NotFound)
        ));
    }
}
