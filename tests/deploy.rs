//! The deployment files: Prometheus alerting rules checked and unit-tested with `promtool`
//! (each alert fires on the series it is for and stays quiet on a healthy node), and every
//! metric they name exported by linkedge.

use std::process::Command;

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

#[test]
fn alerts_name_only_metrics_linkedge_exports() {
    let exported =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let rules = std::fs::read_to_string(RULES).unwrap();
    let mut named = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(base) = word.strip_prefix("linkedge_").map(|_| word) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| base.strip_suffix(s))
                .unwrap_or(base);
            assert!(
                exported.contains(&format!("\"{base}\"")),
                "{word} is not a metric linkedge exports"
            );
            named += 1;
        }
    }
    assert!(named > 10, "{named} metric names found");
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
