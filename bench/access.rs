//! The authentication and authorization steps of one request: token
//! lookup (SHA-256, constant-time compare, expiry) and the model and region
//! checks. Target: under 2 microseconds together at p50.

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::config::{parse_str, snapshot::Snapshot};
use sluice::pipeline::auth::{authenticate, presented_token, unix_now, KeyTable};
use sluice::pipeline::authorize;
use std::hint::black_box;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "a"
url = "http://127.0.0.1:1"
region = "eu"

[[models]]
name = "llama-3.1-8b"
targets = [{ upstream = "a" }]

[auth]

[[teams]]
name = "support"
allowed_models = ["llama-*", "embed-*"]
regions = ["eu"]

[[keys]]
id = "bot"
team = "support"
sha256 = "24651fd68f7ec5dafadd6aade4989d61c65687d5e8c712d91dfedadc7a862a9f"
"#;

fn bench(c: &mut Criterion) {
    let cfg = parse_str(CONFIG, std::path::Path::new(".")).expect("config");
    let snapshot = Snapshot::build(&cfg, CONFIG).expect("snapshot");
    let keys = arc_swap::ArcSwap::from_pointee(KeyTable::build(
        &snapshot.access,
        &snapshot.access.static_keys,
    ));
    let model = snapshot.resolve("llama-3.1-8b").expect("model");
    let header: &[u8] = b"Bearer sk-support-bot-0001";
    c.bench_function("auth_and_authorize", |b| {
        b.iter(|| {
            let table = keys.load();
            let token = presented_token(&snapshot.access.header, |name| {
                (name == "authorization").then_some(black_box(header))
            });
            let p = authenticate(&snapshot.access, &table, token, unix_now()).expect("key");
            authorize::model(&p, &snapshot, model, "llama-3.1-8b").expect("allowed");
            black_box(p);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
