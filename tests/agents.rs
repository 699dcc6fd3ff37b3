//! Machine clicks and opens: every event carries a verdict with reasons, and every redirect is
//! still answered. A real linkedge, a real Redis, real HTTP requests.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

/// One request for `path` from client address `from` (through the trusted local proxy), with
/// `ua` (none when `None`); its status.
async fn follow(
    le: &Linkedge,
    method: reqwest::Method,
    path: &str,
    from: &str,
    ua: Option<&str>,
) -> u16 {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = c
        .request(method, le.http_url(path))
        .header("X-Forwarded-For", from);
    if let Some(ua) = ua {
        r = r.header("User-Agent", ua);
    }
    r.send().await.unwrap().status().as_u16()
}

/// The stream entry of link id `link`: (agent, agent_reasons).
fn verdict(redis: &Redis, link: u64) -> Option<(String, String)> {
    redis
        .entries(STREAM)
        .into_iter()
        .find(|e: &HashMap<String, String>| e["link"] == link.to_string())
        .map(|e| (e["agent"].clone(), e["agent_reasons"].clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_gets_a_verdict_and_every_redirect_is_answered() {
    let redis = Redis::start();
    let mut o = Options::new(redis.url());
    o.trusted_proxies = vec!["127.0.0.1/32".into()];
    let dir = tempfile::tempdir().unwrap();
    let nets = dir.path().join("scanner-networks.txt");
    std::fs::write(
        &nets,
        "# test ranges (documentation prefixes)\n203.0.113.0/24 test-gateway\n",
    )
    .unwrap();
    o.extra_yaml = format!(
        "bots:\n  prefetch_window: 60m\n  scanner_networks: {}\n  burst: {{ links: 3, window: 5s }}\n",
        nets.display()
    );
    let le = Linkedge::start(&o);
    let get = reqwest::Method::GET;
    let path = |link: u64, message_offset: u64| {
        // Distinct messages per case, so burst counts only where the test means it to.
        let t = keyring(2)
            .mint(
                LOCAL,
                &linkedge::token::Link {
                    kind: linkedge::token::Kind::Click,
                    key_id: 2,
                    workspace: 11,
                    message: 1000 + message_offset,
                    link,
                    issued: 1_790_000_000,
                    url: "https://shop.example/p".into(),
                },
            )
            .unwrap();
        format!("/c/{t}")
    };
    // (link id, method, client, user agent) → verdict.
    /// Link id, method, client, user agent, expected agent and reasons.
    type Case<'a> = (
        u64,
        reqwest::Method,
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (1, get.clone(), "198.51.100.1", Some(BROWSER), "human", ""),
        (
            2,
            reqwest::Method::HEAD,
            "198.51.100.2",
            Some(BROWSER),
            "machine",
            "head",
        ),
        (
            3,
            get.clone(),
            "198.51.100.3",
            Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            "machine",
            "ua",
        ),
        (4, get.clone(), "198.51.100.4", None, "suspect", "no_ua"),
        (
            10,
            get.clone(),
            "198.51.100.10",
            Some("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
            "machine",
            "ua",
        ),
        (
            5,
            get.clone(),
            "203.0.113.77",
            Some(BROWSER),
            "suspect",
            "scanner_net",
        ),
    ];
    for (link, method, from, ua, ..) in &cases {
        assert_eq!(
            follow(&le, method.clone(), &path(*link, *link), from, *ua).await,
            302
        );
    }
    assert!(eventually(Duration::from_secs(5), || redis.xlen(STREAM) == cases.len()));
    for (link, _, _, _, agent, reasons) in &cases {
        assert_eq!(
            verdict(&redis, *link),
            Some((agent.to_string(), reasons.to_string())),
            "link {link}"
        );
    }

    // prefetch: a link minted now (the CLI stamps the time) and followed at once.
    let (ok, url) = cli(
        &le,
        "link",
        &[
            "mint",
            "--host",
            LOCAL,
            "--url",
            "https://shop.example/",
            "--link",
            "6",
            "--message",
            "6",
        ],
    );
    assert!(ok, "{url}");
    let p = url
        .trim()
        .split_once(LOCAL)
        .map(|(_, rest)| rest.to_string())
        .unwrap();
    assert_eq!(
        follow(&le, get.clone(), &p, "198.51.100.6", Some(BROWSER)).await,
        302
    );

    // burst: one address following 3 distinct links of one message within 5 s.
    for link in [7, 8, 9] {
        assert_eq!(
            follow(
                &le,
                get.clone(),
                &path(link, 70),
                "198.51.100.9",
                Some(BROWSER)
            )
            .await,
            302
        );
    }
    assert!(eventually(Duration::from_secs(5), || redis.xlen(STREAM)
        == cases.len() + 4));
    let v = |link| verdict(&redis, link).unwrap();
    assert_eq!(v(6), ("suspect".into(), "prefetch".into()));
    assert_eq!(v(7), ("human".into(), "".into()));
    assert_eq!(v(8), ("human".into(), "".into()));
    assert_eq!(v(9), ("suspect".into(), "burst".into()));

    // The networks file changes: reloaded without a restart.
    std::fs::write(&nets, "198.51.100.0/24 new-gateway\n").unwrap();
    let mut link = 100;
    assert!(
        eventually(Duration::from_secs(15), || {
            link += 1;
            futures_block(follow(
                &le,
                get.clone(),
                &path(link, link),
                "198.51.100.50",
                Some(BROWSER),
            ));
            std::thread::sleep(Duration::from_millis(100));
            verdict(&redis, link).is_some_and(|(_, r)| r == "scanner_net")
        }),
        "the scanner networks file was not reloaded:\n{}",
        le.log()
    );
    assert!(
        le.log().contains("isbot=0.1.3"),
        "the list's version is logged"
    );
    assert!(
        le.metric(
            "linkedge_agent_verdicts_total{agent=\"machine\",kind=\"click\",reason=\"head\"}"
        ) >= 1.0
    );
    assert!(
        le.metric("linkedge_agent_verdicts_total{agent=\"human\",kind=\"click\",reason=\"none\"}")
            >= 3.0
    );
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ip_modes_write_what_they_say_and_the_verdict_sees_the_full_address() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    // Only the exact address is a scanner: a reduced address would not match.
    let nets = dir.path().join("nets.txt");
    std::fs::write(&nets, "198.51.100.77/32 test-gateway\n").unwrap();
    std::fs::write(
        dir.path().join("ip-key"),
        "test-ip-key-not-a-secret-0123456789",
    )
    .unwrap();
    let modes = [
        ("full", ""),
        ("truncated", ""),
        (
            "hashed",
            &*format!(
                "  client_ip_key: 7\n  client_ip_keys: [{{ id: 7, secret_file: {} }}]\n",
                dir.path().join("ip-key").display()
            ),
        ),
        ("none", ""),
    ];
    let mut written = Vec::new();
    for (i, (mode, extra)) in modes.iter().enumerate() {
        let mut o = Options::new(redis.url());
        o.trusted_proxies = vec!["127.0.0.1/32".into()];
        o.extra_yaml = format!("bots:\n  scanner_networks: {}\n", nets.display());
        o.events_extra = format!("  client_ip: {mode}\n{extra}");
        let le = Linkedge::start(&o);
        let t = click(LOCAL, "https://shop.example/", 500 + i as u64);
        let status = follow(
            &le,
            reqwest::Method::GET,
            &format!("/c/{t}"),
            "198.51.100.77",
            Some(BROWSER),
        )
        .await;
        assert_eq!(status, 302);
        assert!(eventually(Duration::from_secs(5), || redis.xlen(STREAM) == i + 1));
        let e = redis
            .entries(STREAM)
            .into_iter()
            .find(|e| e["link"] == (500 + i).to_string())
            .unwrap();
        assert_eq!(
            e["agent_reasons"], "scanner_net",
            "{mode}: the verdict saw the full address"
        );
        written.push(e["ip"].clone());
    }
    assert_eq!(written[0], "198.51.100.77");
    assert_eq!(written[1], "198.51.100.0");
    assert!(
        written[2].starts_with("k7:") && written[2].len() == 35 && !written[2].contains("198."),
        "{}",
        written[2]
    );
    assert_eq!(written[3], "");
}
