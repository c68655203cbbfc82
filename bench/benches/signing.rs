//! Signing cost per algorithm: the unavoidable part of every token response.
//! Run: `cd bench && cargo bench --bench signing`.

use criterion::{Criterion, criterion_group, criterion_main};
use habilis_idp::config::{Config, SigningAlg};
use habilis_idp::keys::{KeyManager, MasterKey};
use serde_json::{Map, Value, json};

fn claims() -> Map<String, Value> {
    let now = habilis_idp::unix_now();
    let v = json!({
        "iss": "https://auth.example.org", "sub": "6f1c2d3e-0000-4000-8000-000000000001",
        "aud": "teleconsultation", "client_id": "teleconsultation", "iat": now, "exp": now + 300,
        "jti": "0f8fad5b-d9cb-469f-a165-70867728950e", "scope": "openid profile",
        "acr": "eidas1", "amr": ["pwd", "otp", "mfa"], "auth_time": now
    });
    v.as_object().cloned().unwrap_or_default()
}

fn bench_signing(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.keys.algorithms = vec![SigningAlg::ES256, SigningAlg::RS256, SigningAlg::EdDSA];
    let keys = runtime.block_on(async {
        let store = habilis_idp::store::connect(&config).await.expect("store");
        KeyManager::start(store, MasterKey::generate(), &config).await.expect("keys")
    });
    let claims = claims();
    let mut group = c.benchmark_group("sign_access_token");
    for alg in [SigningAlg::ES256, SigningAlg::RS256, SigningAlg::EdDSA] {
        group.bench_function(alg.as_str(), |b| b.iter(|| keys.sign(Some(alg), "at+jwt", &claims).expect("sign")));
    }
    group.finish();
    let token = keys.sign(Some(SigningAlg::ES256), "at+jwt", &claims).expect("sign");
    c.bench_function("verify_ES256", |b| b.iter(|| keys.verify(&token).expect("verify")));
    c.bench_function("jwks_serve_copy", |b| b.iter(|| keys.jwks()));
}

criterion_group!(benches, bench_signing);
criterion_main!(benches);
