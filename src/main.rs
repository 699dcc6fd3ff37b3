//! The `linkedge` command: serve, check a config, and mint or decode tracked links.

use clap::{Args, Parser, Subcommand};
use linkedge::certs::{Sealer, Store};
use linkedge::config::Settings;
use linkedge::db::Db;
use linkedge::domains::Registry;
use linkedge::server::{self, ProcessOptions};
use linkedge::token::{Kind, Link, TokenError, normalize_host};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// mimalloc instead of glibc's malloc: the request path allocates and frees many small buffers
/// per request (Pingora's headers, tasks and pooled-connection bookkeeping), and glibc's
/// malloc/free took about 13% of the core under load (figures in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// linkedge: the HTTPS edge for tracked email links. It verifies each link's signature against
/// the Host it arrived on, records the click to a Redis stream without making anyone wait, and
/// redirects to the destination.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP, HTTPS and metrics listeners, and the event writer).
    ///
    /// SIGTERM stops gracefully (open requests finish, queued events are written or spooled),
    /// SIGINT stops at once, SIGQUIT hands the listeners to a new process started with --upgrade.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Run in the background (pid file: server.pid_file).
        #[arg(short, long)]
        daemon: bool,
        /// Take the listening sockets over from a running linkedge (zero-downtime upgrade).
        #[arg(short, long)]
        upgrade: bool,
        /// Load everything, then exit without serving.
        #[arg(short, long)]
        test: bool,
    },
    /// Validate a config file, the environment overrides, and the secrets and certificate files
    /// it refers to.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Check the fields only, without reading secrets or certificate files (for a config
        /// meant for another machine).
        #[arg(long, conflicts_with = "online")]
        offline: bool,
        /// Also connect to Redis with the configured topology and credentials, and say which
        /// node answered and its version; fail with the reason when it cannot be reached.
        #[arg(long)]
        online: bool,
    },
    /// Mint, inspect and verify tracked links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Manage the registry of customer tracking domains (kept in Redis).
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Manage per-domain certificates in the certificate store (needs `certs` in the config).
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Store a certificate chain and key for HOST (checked: the key matches, the certificate
    /// covers HOST); every node serves it at its next handshake for HOST.
    Import {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host.
        host: String,
        /// PEM certificate chain, leaf first.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// PEM private key of the leaf.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Print the stored certificate's validity and sealing key id as JSON.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host.
        host: String,
    },
    /// Remove HOST's certificate; nodes stop serving it at once.
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host.
        host: String,
    },
}

fn cert(cmd: &CertCommand) -> Result<bool, String> {
    let (CertCommand::Import { config, host, .. }
    | CertCommand::Show { config, host }
    | CertCommand::Remove { config, host }) = cmd;
    let s = load(config)?;
    let f = &s.file;
    let c = f
        .certs
        .as_ref()
        .ok_or("the config has no certs section: per-domain certificates are off")?;
    let host = normalize_host(host).ok_or_else(|| format!("{host:?}: not a host name"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let db = Db::from_settings(&s, "cli").map_err(|e| format!("{e:#}"))?;
    rt.block_on(async {
        let store = Store::new(db, Sealer::new(s.master_keys.clone(), c.master_key));
        match cmd {
            CertCommand::Import { cert, key, .. } => {
                let chain = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
                let key = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
                let info = store
                    .put(&host, &chain, &key)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).expect("serializes")
                );
            }
            CertCommand::Show { .. } => match store.info(&host).await.map_err(|e| e.to_string())? {
                Some(info) => println!(
                    "{}",
                    serde_json::to_string_pretty(&info).expect("serializes")
                ),
                None => return Err(format!("no certificate stored for {host}")),
            },
            CertCommand::Remove { .. } => {
                if !store.remove(&host).await.map_err(|e| e.to_string())? {
                    return Err(format!("no certificate stored for {host}"));
                }
                println!("removed the certificate of {host}");
            }
        }
        Ok(true)
    })
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Register HOST for a workspace in a region (it starts pending).
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host, such as link.example.com (IDNA names are converted to punycode).
        host: String,
        /// The workspace that owns it.
        #[arg(long)]
        workspace: u64,
        /// Its data region, one of the configured regions (us, eu).
        #[arg(long)]
        region: String,
    },
    /// Check HOST's DNS and proxy setup; on success mark it verified and, with `acme`
    /// configured, order its certificate at once. On failure, say what is wrong.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host.
        host: String,
    },
    /// Print one domain as JSON.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host.
        host: String,
    },
    /// List every domain, one per line: host, state, region, workspace, last error.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a domain from the registry.
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host.
        host: String,
    },
}

fn domain(cmd: &DomainCommand) -> Result<bool, String> {
    let config = match cmd {
        DomainCommand::Add { config, .. }
        | DomainCommand::Verify { config, .. }
        | DomainCommand::Show { config, .. }
        | DomainCommand::List { config }
        | DomainCommand::Remove { config, .. } => config,
    };
    let s = load(config)?;
    let f = &s.file;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let db = Db::from_settings(&s, "cli").map_err(|e| format!("{e:#}"))?;
    rt.block_on(async {
        let reg = Registry::new(db, f.regions.keys().cloned().collect());
        let show = |d: &linkedge::domains::Domain| {
            serde_json::to_string_pretty(d).expect("domains serialize")
        };
        match cmd {
            DomainCommand::Add {
                host,
                workspace,
                region,
                ..
            } => {
                let d = reg
                    .add(host, *workspace, region)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("{}", show(&d));
            }
            DomainCommand::Verify { host, .. } => {
                let started = std::time::Instant::now();
                let acme = match (&f.acme, &f.certs) {
                    (Some(a), Some(c)) => {
                        Some((a, Sealer::new(s.master_keys.clone(), c.master_key)))
                    }
                    _ => None,
                };
                let host = linkedge::domains::normalize_domain(host).map_err(|e| e.to_string())?;
                match linkedge::verify::verify_and_issue(&reg, &f.verify, acme, &host)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    linkedge::verify::Verified::Verified => println!("{host} verified"),
                    linkedge::verify::Verified::Issued(info) => {
                        println!("{host} verified");
                        println!(
                            "certificate issued in {:.2} s, valid until {} (Unix seconds)",
                            started.elapsed().as_secs_f64(),
                            info.not_after
                        );
                    }
                }
            }
            DomainCommand::Show { host, .. } => {
                match reg.get(host).await.map_err(|e| e.to_string())? {
                    Some(d) => println!("{}", show(&d)),
                    None => return Err(format!("{host} is not registered")),
                }
            }
            DomainCommand::List { .. } => {
                for d in reg.list().await.map_err(|e| e.to_string())? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        d.host,
                        d.state.as_str(),
                        d.region,
                        d.workspace,
                        d.error
                    );
                }
            }
            DomainCommand::Remove { host, .. } => {
                reg.remove(host).await.map_err(|e| e.to_string())?;
                println!("removed {host}");
            }
        }
        Ok(true)
    })
}

#[derive(Args)]
struct ConfigArg {
    /// The YAML config file, e.g. conf/dev.yaml.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Args)]
struct LinkIds {
    /// Workspace id.
    #[arg(long, default_value_t = 1)]
    workspace: u64,
    /// Message (delivery) id.
    #[arg(long, default_value_t = 1)]
    message: u64,
    /// Link id within the message.
    #[arg(long, default_value_t = 1)]
    link: u64,
}

#[derive(Subcommand)]
enum LinkCommand {
    /// Print a tracked click URL for HOST that redirects to URL.
    Mint {
        #[command(flatten)]
        config: ConfigArg,
        /// The branded tracking domain the link is for, e.g. link.example.com.
        #[arg(long)]
        host: String,
        /// The destination: an absolute http:// or https:// URL.
        #[arg(long)]
        url: String,
        #[command(flatten)]
        ids: LinkIds,
    },
    /// Print an open-pixel URL for HOST.
    Pixel {
        #[command(flatten)]
        config: ConfigArg,
        /// The branded tracking domain the pixel is for.
        #[arg(long)]
        host: String,
        #[command(flatten)]
        ids: LinkIds,
    },
    /// Print what a tracked URL carries and whether it verifies for its host.
    Decode {
        #[command(flatten)]
        config: ConfigArg,
        /// A tracked URL as printed by `link mint` or `link pixel`.
        url: String,
    },
}

fn load(c: &ConfigArg) -> Result<Settings, String> {
    Settings::load(&c.config).map_err(|e| format!("{}: {e}", c.config.display()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mint(c: &ConfigArg, host: &str, kind: Kind, url: String, ids: &LinkIds) -> Result<(), String> {
    let s = load(c)?;
    let host = normalize_host(host).ok_or_else(|| format!("--host {host:?}: not a host name"))?;
    let link = Link {
        kind,
        key_id: s.keyring.mint_id(),
        workspace: ids.workspace,
        message: ids.message,
        link: ids.link,
        issued: now(),
        url,
    };
    let token = s.keyring.mint(&host, &link).map_err(|e| e.to_string())?;
    println!(
        "{}://{host}/{}/{token}",
        s.file.links.scheme,
        kind.path_segment()
    );
    Ok(())
}

fn decode(c: &ConfigArg, url: &str) -> Result<bool, String> {
    let s = load(c)?;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("expected a URL starting with http:// or https://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = normalize_host(authority).ok_or("the URL has no valid host")?;
    let path = path.split(['?', '#']).next().unwrap_or("");
    let token = path
        .strip_prefix("/c/")
        .or_else(|| path.strip_prefix("/o/"))
        .ok_or("not a tracked link: the path must be /c/<token> or /o/<token>")?;
    let link = s
        .keyring
        .inspect(token)
        .map_err(|e| format!("cannot decode: {e}"))?;
    println!("host:      {host}");
    println!("kind:      {}", link.kind.event_type());
    println!("key id:    {}", link.key_id);
    println!("workspace: {}", link.workspace);
    println!("message:   {}", link.message);
    println!("link:      {}", link.link);
    println!("issued:    {} (Unix seconds)", link.issued);
    if link.kind == Kind::Click {
        println!("url:       {}", link.url);
    }
    let verdict = match s.keyring.verify(&host, token) {
        Ok(_) => "valid for this host".to_string(),
        Err(TokenError::WrongHost) => {
            "INVALID: genuine, but minted for another host (answered 403 Invalid link security token)"
                .to_string()
        }
        Err(e) => format!("INVALID: {e}"),
    };
    println!("signature: {verdict}");
    Ok(verdict == "valid for this host")
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); `LINKEDGE_LOG_FORMAT=json` writes one
/// JSON object per line for log shippers.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("LINKEDGE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let result: Result<bool, String> = match &cli.command {
        Command::Serve {
            config,
            daemon,
            upgrade,
            test,
        } => load(config).and_then(|s| {
            server::run(
                s,
                ProcessOptions {
                    daemon: *daemon,
                    upgrade: *upgrade,
                    test: *test,
                },
            )
            .map(|_| true)
            .map_err(|e| format!("{e:#}"))
        }),
        Command::Check {
            config,
            offline: true,
            ..
        } => linkedge::config::File::load(&config.config)
            .map(|f| {
                println!(
                    "{}: fields ok ({} link key(s), minting with key {}); secrets and files not read",
                    config.config.display(),
                    f.links.keys.len(),
                    f.links.mint_key
                );
                true
            })
            .map_err(|e| format!("{}: {e}", config.config.display())),
        Command::Check {
            config,
            offline: false,
            online,
        } => load(config).and_then(|s| {
            let at = |e: anyhow::Error| format!("{}: {e:#}", config.config.display());
            if s.file.listen.https.is_some() {
                linkedge::tls::settings(&s.file.tls.cert, &s.file.tls.key).map_err(at)?;
            }
            // Resolves backend names and reads CA files, as `serve` will.
            linkedge::regions::build(&s.file).map_err(at)?;
            let db = Db::from_settings(&s, "cli").map_err(at)?;
            if *online {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let node = rt
                    .block_on(db.describe())
                    .map_err(|e| {
                        format!(
                            "{}: redis: cannot reach {}: {e}",
                            config.config.display(),
                            db.target()
                        )
                    })?;
                println!("{}: {node}", config.config.display());
            }
            println!(
                "{}: ok ({} link key(s), minting with key {})",
                config.config.display(),
                s.file.links.keys.len(),
                s.keyring.mint_id()
            );
            Ok(true)
        }),
        Command::Link(LinkCommand::Mint {
            config,
            host,
            url,
            ids,
        }) => mint(config, host, Kind::Click, url.clone(), ids).map(|_| true),
        Command::Link(LinkCommand::Pixel { config, host, ids }) => {
            mint(config, host, Kind::Open, String::new(), ids).map(|_| true)
        }
        Command::Link(LinkCommand::Decode { config, url }) => decode(config, url),
        Command::Domain(cmd) => domain(cmd),
        Command::Cert(cmd) => cert(cmd),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
