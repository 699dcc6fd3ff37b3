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
