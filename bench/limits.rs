//! The limits step of one request: rate limits (rpm, tpm, concurrency) of
//! the team and the key and the budget reservation of the team, then the
//! settlement; without `[cluster]` (target: under 1 microsecond at p50,
//! docs/cost.md) and with it (the node's allowances, as leased by the
//! `sluice-cluster` thread, which does not run here).

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::config::{parse_str, snapshot::Snapshot};
use sluice::pipeline::account;
use sluice::pipeline::auth::{authenticate, presented_token, unix_now, KeyTable};
use std::hint::black_box;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "a"
url = "http://127.0.0.1:1"

[[models]]
name = "llama-3.1-8b"
targets = [{ upstream = "a" }]
price = { input_per_mtok = 0.05, output_per_mtok = 0.10 }

[[teams]]
name = "support"
budget = { amount = 1000000000.0, period = "month" }
alert_at = [0.5, 0.8]
rpm = 4000000000
tpm = 4000000000
max_concurrent = 100000

[[keys]]
id = "bot"
team = "support"
sha256 = "24651fd68f7ec5dafadd6aade4989d61c65687d5e8c712d91dfedadc7a862a9f"
rpm = 4000000000
max_concurrent = 100000
"#;

const BODY: &[u8] = br#"{"model":"llama-3.1-8b","messages":[{"role":"user","content":"Say hello to the people in the room, please."}],"max_tokens":64}"#;

fn bench(c: &mut Criterion) {
    bench_config(c, "limits_reserve_and_settle", CONFIG);
    // The same limits shared through [cluster]: other names, because the
    // registry of cost controls is process-wide.
    sluice::cluster::enable();
    let clustered = format!(
        "{}\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\n",
        CONFIG
            .replace("\"support\"", "\"support-c\"")
            .replace("id = \"bot\"", "id = \"bot-c\"")
    );
    bench_config(c, "limits_reserve_and_settle_cluster", &clustered);
}

/// Gives every shared limit of `p` room for the whole bench, as leases
/// would (the current and the next minute).
fn lease_everything(p: &sluice::pipeline::auth::Principal) {
    let minute = sluice::pipeline::limits::now_ms() / 60_000;
    let controls = [
        p.team.controls.as_ref(),
        p.key.as_ref().and_then(|k| k.controls.as_ref()),
    ];
    for c in controls.into_iter().flatten() {
        if let Some(shares) = c.limits.as_ref().and_then(|m| m.shares.as_deref()) {
            for m in [minute, minute + 1] {
                shares.requests.set_allowed(m, u64::from(u32::MAX));
                shares.tokens.set_allowed(m, u64::from(u32::MAX));
            }
            shares
                .concurrency
                .store(100_000, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(b) = &c.budget {
            if let Some(share) = &b.share {
                share
                    .allowance
                    .store(b.amount, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

fn bench_config(c: &mut Criterion, name: &str, config: &str) {
    let cfg = parse_str(config, std::path::Path::new(".")).expect("config");
    let snapshot = Snapshot::build(&cfg, config).expect("snapshot");
    let table = KeyTable::build(&snapshot.access, &snapshot.access.static_keys);
    let token = presented_token(&snapshot.access.header, |name| {
        (name == "authorization").then_some(&b"Bearer sk-support-bot-0001"[..])
    });
    let p = authenticate(&snapshot.access, &table, token, unix_now()).expect("key");
    lease_everything(&p);
    c.bench_function(name, |b| {
        b.iter(|| {
            let worst = account::worst(&snapshot.billing, black_box(BODY), std::iter::once(0));
            let admission = account::admit(&p, worst).expect("admitted");
            admission.settle(&snapshot.billing, 80, snapshot.billing.cost(0, 30, 50));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
