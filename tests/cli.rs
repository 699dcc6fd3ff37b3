//! The command line: check, link mint/pixel/decode.

use std::path::Path;
use std::process::{Command, Output};

fn linkedge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_the_dev_config_and_names_the_bad_field() {
    let ok = linkedge(&["check", "--config", "conf/dev.yaml"]);
    assert!(ok.status.success(), "{}", text(&ok));

    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let dev = std::fs::read_to_string(Path::new(root).join("conf/dev.yaml")).unwrap();
    let bad = dev
        .replace("max_bytes: 64MiB", "max_bytes: lots")
        .replace("dev-keys/", &format!("{root}/conf/dev-keys/"));
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, bad).unwrap();
    let out = linkedge(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("events.spool.max_bytes: expected a size like 512MiB"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_names_a_bad_environment_override() {
    let out = Command::new(env!("CARGO_BIN_EXE_linkedge"))
        .args(["check", "--config", "conf/dev.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LINKEDGE_HTTPS_LISTEN", "everywhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("LINKEDGE_HTTPS_LISTEN: expected host:port"),
        "{}",
        text(&out)
    );
}

#[test]
fn mint_then_decode() {
    let out = linkedge(&[
        "link",
        "mint",
        "--config",
        "conf/dev.yaml",
        "--host",
        "Link.Example.com",
        "--url",
        "https://example.com/spring-sale",
        "--workspace",
        "5",
        "--message",
        "6",
        "--link",
        "7",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(url.starts_with("https://link.example.com/c/"), "{url}");
    assert!(url.len() < 200, "{} chars", url.len());

    let out = linkedge(&["link", "decode", "--config", "conf/dev.yaml", &url]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "workspace: 5",
        "message:   6",
        "link:      7",
        "url:       https://example.com/spring-sale",
        "signature: valid for this host",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }

    let moved = url.replace("link.example.com", "links.other.example");
    let out = linkedge(&["link", "decode", "--config", "conf/dev.yaml", &moved]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("minted for another host"),
        "{}",
        text(&out)
    );
}

#[test]
fn mint_refuses_open_redirect_material_and_pixel_prints_o() {
    let out = linkedge(&[
        "link",
        "mint",
        "--config",
        "conf/dev.yaml",
        "--host",
        "l.example.com",
        "--url",
        "javascript:alert(1)",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("absolute http:// or https:// URL"),
        "{}",
        text(&out)
    );
    let out = linkedge(&[
        "link",
        "pixel",
        "--config",
        "conf/dev.yaml",
        "--host",
        "l.example.com",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("https://l.example.com/o/"));
}

#[test]
fn offline_check_validates_fields_without_secrets() {
    // The production example's secrets are not here, so only --offline passes.
    let out = linkedge(&["check", "--config", "conf/linkedge.yaml"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("links.keys[0]: environment variable LINKEDGE_LINK_KEY_1 is not set"),
        "{}",
        text(&out)
    );
    let out = linkedge(&["check", "--offline", "--config", "conf/linkedge.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
}
