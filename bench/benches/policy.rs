//! Cost of one habilitation decision by the compiled profiles (Cedar), the part of every token
//! carrying `patient_access` details that a plain token does not pay.
//! Run: `cd bench && cargo bench --bench policy`.

use criterion::{Criterion, criterion_group, criterion_main};

/// The server's allocator (idp/src/main.rs), so that figures match what it pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use habilis_idp::habilitation::policy::{PolicyEngine, PolicySources, ProfileSpec, RelationshipFacts};

fn profile(name: &str, condition: Option<&str>) -> ProfileSpec {
    ProfileSpec {
        name: name.into(),
        kinds: vec!["treating".into(), "care_team".into()],
        actions: vec!["read".into(), "write".into()],
        datatypes: vec!["report".into(), "prescription".into()],
        clients: vec!["bench".into()],
        min_acr_level: 1,
        professions: Vec::new(),
        condition: condition.map(str::to_owned),
        requires_assignment: false,
    }
}

fn bench_policy(c: &mut Criterion) {
    let engine = PolicyEngine::new(&PolicySources::embedded()).expect("embedded policies");
    let compiled = engine
        .compile(&[profile("plain", None), profile("conditional", Some("resource.organisation == \"\""))])
        .expect("profiles compile");
    let context = habilis_bench::bench_context(true);
    let active = habilis_bench::treating_relationship("r-0123456789", "active");
    let revoked = habilis_bench::treating_relationship("r-0123456789", "revoked");
    assert!(compiled.evaluate("plain", "read", &active, &context).allowed);
    assert!(!compiled.evaluate("plain", "read", &revoked, &context).allowed);
    let mut group = c.benchmark_group("habilitation_decision");
    group.bench_function("allowed", |b| b.iter(|| compiled.evaluate("plain", "read", &active, &context)));
    group.bench_function("allowed_with_condition", |b| {
        b.iter(|| compiled.evaluate("conditional", "read", &active, &context))
    });
    // A relationship never evaluated before: its Cedar entities are built (the memos' miss path).
    let mut serial = 0u64;
    group.bench_function("allowed_new_relationship", |b| {
        b.iter(|| {
            serial += 1;
            let facts = RelationshipFacts { id: format!("r-{serial}"), ..active.clone() };
            compiled.evaluate("plain", "read", &facts, &context)
        })
    });
    group.bench_function("denied_revoked", |b| b.iter(|| compiled.evaluate("plain", "read", &revoked, &context)));
    group.bench_function("denied_action", |b| b.iter(|| compiled.evaluate("plain", "share", &active, &context)));
    group.finish();
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);
