//! The deployment files: Prometheus alerting rules checked and unit-tested with `promtool`
//! (each alert fires on the series it is for and stays quiet on a healthy node); the Grafana
//! dashboard's queries and the alerts' expressions evaluated by a real Prometheus scraping a
//! real linkedge; every metric they name exported by linkedge; the Kubernetes base built with
//! `kubectl kustomize`.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yaml");
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/alerts_test.yaml"
);

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs (scripts/deps.sh installs Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alerting_rules_are_valid_and_each_alert_passes_its_unit_test() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert of the rules file has at least one test case.
    let rules = std::fs::read_to_string(RULES).unwrap();
    let tests = std::fs::read_to_string(RULE_TESTS).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test"
        );
    }
}

/// The metric names an expression or file mentions (`_bucket`, `_count`, `_sum` taken off).
fn metric_names(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("linkedge_"))
        .map(|w| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_string()
        })
        .collect()
}

/// Fails on a name that `src/metrics.rs` does not register.
fn assert_exported(what: &str, text: &str) -> usize {
    let exported =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let names = metric_names(text);
    for name in &names {
        assert!(
            exported.contains(&format!("\"{name}\"")),
            "{what}: {name} is not a metric linkedge exports"
        );
    }
    names.len()
}

#[test]
fn alerts_name_only_metrics_linkedge_exports() {
    let rules = std::fs::read_to_string(RULES).unwrap();
    assert!(assert_exported("alerts.yaml", &rules) > 10);
}

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/linkedge.json");

/// Every `expr` of the dashboard's panels.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Every alert's expression.
fn alert_exprs() -> Vec<(String, String)> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            out.push((
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// A `prometheus` server on a free loopback port scraping `target` every second.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - job_name: linkedge\n    static_configs: [{{ targets: [\"{target}\"] }}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("prometheus runs (scripts/deps.sh installs Debian's prometheus package)");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        assert!(
            eventually(Duration::from_secs(30), || p.get("/-/ready").is_some()),
            "prometheus did not become ready"
        );
        p
    }

    /// A GET over plain HTTP/1.0; the body when the status is 2xx.
    fn get(&self, path_and_query: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.split_whitespace()
            .nth(1)
            .is_some_and(|code| code.starts_with('2'))
            .then(|| body.to_string())
    }

    /// An instant query: Prometheus's JSON answer (its `status` says whether it failed).
    fn query(&self, expr: &str) -> serde_json::Value {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        // A failed query answers 400 with the same JSON shape: read the body either way.
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /api/v1/query?query={encoded} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_alert_queries_run_against_real_prometheus_scraping_linkedge() {
    let redis = Redis::start();
    let le = Linkedge::start(&Options::new(redis.url()));
    let prom = tokio::task::block_in_place(|| Prometheus::start(le.metrics));
    // A short load: clicks, opens, /health, a refused token.
    let c = client();
    let click = le.http_url(&format!("/c/{}", click(LOCAL, "https://example.com/", 1)));
    let open = le.http_url(&format!("/o/{}", pixel(LOCAL)));
    for _ in 0..50 {
        assert_eq!(c.get(&click).send().await.unwrap().status(), 302);
        assert_eq!(c.get(&open).send().await.unwrap().status(), 200);
        assert_eq!(
            c.get(le.http_url("/health")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        c.get(le.http_url("/c/AAAA")).send().await.unwrap().status(),
        404
    );
    let scraped = |expr: &str, at_least: f64| {
        let r = prom.query(expr);
        r["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v >= at_least)
    };
    tokio::task::block_in_place(|| {
        // Prometheus saw the load, over enough scrapes for rate() over a minute.
        assert!(
            eventually(Duration::from_secs(30), || scraped(
                r#"sum(linkedge_requests_total{route="click"})"#,
                50.0
            ) && scraped(
                r#"count_over_time(up{job="linkedge"}[1m])"#,
                3.0
            )),
            "prometheus did not scrape linkedge's load"
        );
        let queries = dashboard_queries();
        assert!(queries.len() > 25);
        let alerts = alert_exprs();
        assert_eq!(alerts.len(), 15);
        for (what, expr) in queries.iter().chain(&alerts) {
            assert_exported(what, expr);
            let r = prom.query(expr);
            assert_eq!(r["status"], "success", "{what}: {expr}\n{r}");
        }
        // The panels an operator looks at first show data.
        for expr in [
            r#"sum by (status) (rate(linkedge_requests_total{route="click"}[1m]))"#,
            r#"sum by (status) (rate(linkedge_requests_total{route="open"}[1m]))"#,
            r#"sum by (sink, outcome) (rate(linkedge_events_total[1m]))"#,
            r#"histogram_quantile(0.99, sum by (route, le) (rate(linkedge_request_duration_seconds_bucket[1m])))"#,
            "sum by (sink) (linkedge_event_queue_depth)",
        ] {
            assert!(
                queries.iter().any(|(_, q)| q == expr),
                "the dashboard lost {expr}"
            );
            let r = prom.query(expr);
            assert!(
                !r["data"]["result"].as_array().unwrap().is_empty(),
                "no data for {expr}: {r}"
            );
        }
    });
}

/// `kubectl kustomize deploy/kubernetes`, as YAML documents.
fn kustomized() -> Vec<serde_yaml::Value> {
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes"),
        ])
        .output()
        .expect("kubectl runs (scripts/deps.sh installs Debian's kubernetes-client)");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn kubernetes_base_builds_and_drains_connections_within_the_grace_period() {
    let docs = kustomized();
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "ConfigMap",
    ] {
        assert!(!of_kind(&docs, kind).is_empty(), "no {kind}");
    }
    // No secret value is in the repository: the pods read a Secret created by the operator.
    assert!(of_kind(&docs, "Secret").is_empty());
    let public = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "linkedge")
        .unwrap();
    assert_eq!(public["spec"]["externalTrafficPolicy"], "Local");

    // The config the pods run is valid, and its timings fit the pod's grace period.
    let config_map = of_kind(&docs, "ConfigMap")[0];
    let config = config_map["data"]["linkedge.yaml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("linkedge.yaml");
    std::fs::write(&path, config).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args(["check", "--offline", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let config: serde_yaml::Value = serde_yaml::from_str(config).unwrap();
    let server = &config["server"];
    let seconds = |v: &serde_yaml::Value| v.as_u64().unwrap();
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let pre_stop = seconds(&container["lifecycle"]["preStop"]["sleep"]["seconds"]);
    let drain = pre_stop
        + seconds(&server["grace_period_seconds"])
        + seconds(&server["graceful_shutdown_timeout_seconds"]);
    let grace = seconds(&pod["terminationGracePeriodSeconds"]);
    assert!(
        grace >= drain && grace <= drain + 10,
        "terminationGracePeriodSeconds {grace} against preStop + linkedge's shutdown {drain}"
    );
    // Probes on the metrics listener's /health.
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/health", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let metrics_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap()["containerPort"]
        .as_u64()
        .unwrap();
    assert!(
        config["listen"]["metrics"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{metrics_port}"))
    );
    // The spool directory is a mounted volume.
    let spool = config["events"]["spool"]["dir"].as_str().unwrap();
    assert!(
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == spool),
        "{spool} is not a volume"
    );
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        "linkedge-secrets"
    );
}
