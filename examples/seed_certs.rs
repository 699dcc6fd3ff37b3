//! Fills a linkedge certificate store with many domains' certificates, for the handshake
//! benchmark (benches/load scenario 3): ECDSA P-256 leaves for `d<i>.<suffix>` signed by the
//! development CA, stored (keys sealed) through the same `CertStore::put` the CLI and ACME use.
//!
//! With `--register N`, also registers `d0` … `d<N-1>` in the domain registry (workspace 1, the
//! first configured region), those with a certificate as `issued`, the rest `pending`: the
//! benchmark's memory figure is taken with 100,000 domains registered.
//!
//! ```sh
//! cargo run --release --example seed_certs -- --config FILE --count 10000 \
//!     [--register 100000] [--suffix bench.linkedge.test] [--names-out names.txt]
//! ```

use linkedge::config::Settings;
use linkedge::registry::{Registry, State};
use linkedge::tls::CertStore;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};
use std::path::{Path, PathBuf};

fn leaf(ca: &X509, ca_key: &PKey<openssl::pkey::Private>, name: &str) -> (Vec<u8>, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", name).unwrap();
    b.set_subject_name(&n.build()).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(90).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns(name)
        .build(&b.x509v3_context(Some(ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(ca_key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

fn main() {
    let mut config = None;
    let mut count = 10_000usize;
    let mut suffix = "bench.linkedge.test".to_string();
    let mut names_out: Option<PathBuf> = None;
    let mut register = 0usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().map(PathBuf::from),
            "--count" => count = it.next().unwrap().parse().unwrap(),
            "--suffix" => suffix = it.next().unwrap(),
            "--names-out" => names_out = it.next().map(PathBuf::from),
            "--register" => register = it.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let s = Settings::load(&config.expect("--config FILE")).unwrap_or_else(|e| panic!("{e}"));
    let c = s.certs.as_ref().expect("the config has a certs section");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
    let ca = X509::from_pem(&std::fs::read(root.join("dev-ca.pem")).unwrap()).unwrap();
    let ca_key =
        PKey::private_key_from_pem(&std::fs::read(root.join("dev-ca.key")).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let names: Vec<String> = (0..count).map(|i| format!("d{i}.{suffix}")).collect();
    rt.block_on(async {
        let db = s.db("seed").unwrap();
        let store = CertStore::new(db.clone(), c.sealer.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in names.chunks(500) {
            let (store, chunk) = (store.clone(), chunk.to_vec());
            let (ca, ca_key) = (ca.clone(), ca_key.clone());
            tasks.spawn(async move {
                for name in chunk {
                    let (cert, key) = leaf(&ca, &ca_key, &name);
                    store.put(&name, &cert, &key).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let region = s.regions.keys().next().cloned().unwrap_or_default();
        let registry = Registry::new(db, vec![region.clone()]);
        for chunk in (0..register).collect::<Vec<_>>().chunks(2000) {
            let (registry, chunk, region) = (registry.clone(), chunk.to_vec(), region.clone());
            let suffix = suffix.clone();
            tasks.spawn(async move {
                for i in chunk {
                    let name = format!("d{i}.{suffix}");
                    registry.add(&name, 1, &region, false).await.unwrap();
                    if i < count {
                        registry.set_state(&name, State::Issued, "").await.unwrap();
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    if let Some(p) = names_out {
        std::fs::write(p, names.join("\n")).unwrap();
    }
    eprintln!(
        "stored {count} certificates and registered {register} domains in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
