//! See benches/ and the scripts in this folder.

use habilis_idp::habilitation::policy::{DecisionContext, RelationshipFacts};

/// An open-ended `treating` relationship of a physician (profession 10), as the policy engine
/// sees it: the shape of the generated data of `habilitations.sh`.
pub fn treating_relationship(id: &str, status: &str) -> RelationshipFacts {
    RelationshipFacts {
        id: id.into(),
        kind: "treating".into(),
        status: status.into(),
        valid_from: 0,
        valid_until: None,
        professional_professions: vec!["10".into()],
        patient_test_identity: false,
        organisation: None,
        professional_profiles: Vec::new(),
    }
}

/// Client `bench` asking now for `report` data at login level eidas1.
pub fn bench_context(production: bool) -> DecisionContext {
    DecisionContext {
        client: "bench".into(),
        acr_level: 1,
        now: habilis_idp::unix_now(),
        datatypes: vec!["report".into()],
        production,
    }
}
