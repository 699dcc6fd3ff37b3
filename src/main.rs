//! The `linkedge` command: its arguments (clap) and the dispatch to [`linkedge::server`] and
//! [`linkedge::cli`], which do the work.

use clap::{Args, Parser, Subcommand};
use linkedge::cli::{self, cert, domain, link};
use linkedge::server::{self, ProcessOptions};
use linkedge::token::Kind;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Apply a new config without dropping a connection: check it, start a new process that
    /// takes the listening sockets over from the running one (server.pid_file), which finishes
    /// its open requests and exits. A bad config changes nothing.
    Reload {
        #[command(flatten)]
        config: ConfigArg,
        /// Append the new process's log to this file (default: this command's output).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
    /// Mint, inspect and verify tracked links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Manage the registry of customer tracking domains (kept in Redis).
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Stop bad links on every node within a second: the block list (kept in Redis).
    #[command(subcommand)]
    Block(BlockCommand),
    /// Manage per-domain certificates in the certificate store (needs `certs` in the config).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Track a whole email part read from stdin: every http(s) link becomes a click link on
    /// HOST, an open pixel is added; the part goes to stdout (README, "Rewriting emails").
    Rewrite {
        #[command(flatten)]
        config: ConfigArg,
        /// The branded tracking domain, e.g. link.example.com (registered, not retired).
        #[arg(long)]
        host: String,
        /// Workspace id.
        #[arg(long)]
        workspace: u64,
        /// Message (delivery) id.
        #[arg(long)]
        message: u64,
        /// A plain-text part instead of HTML.
        #[arg(long)]
        text: bool,
        /// Add no open pixel.
        #[arg(long)]
        no_pixel: bool,
        /// Write the report (JSON, one entry per link) to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BlockCommand {
    /// Add a rule; exactly one of --url, --prefix, --host, --subdomains, --workspace (with
    /// --message: one message) and --domain says what it matches. Prints it as JSON.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Exactly this destination.
        #[arg(long, group = "target")]
        url: Option<String>,
        /// Every destination starting with this (http(s)://host/...).
        #[arg(long, group = "target")]
        prefix: Option<String>,
        /// Every destination on exactly this host.
        #[arg(long, group = "target")]
        host: Option<String>,
        /// Every destination on this host and its subdomains.
        #[arg(long, group = "target")]
        subdomains: Option<String>,
        /// Every link of this workspace (with --message: of that message only).
        #[arg(long, group = "target")]
        workspace: Option<u64>,
        /// With --workspace: every link of this message.
        #[arg(long, requires = "workspace")]
        message: Option<u64>,
        /// Every link on this branded tracking domain.
        #[arg(long, group = "target")]
        domain: Option<String>,
        /// block (a "link disabled" page, 410) or warn (a page to continue from).
        #[arg(long, value_parser = ["block", "warn"])]
        action: String,
        /// Why (shown in list and the audit stream).
        #[arg(long)]
        reason: String,
        /// Who adds it.
        #[arg(long)]
        by: String,
        /// Lift it after this long (e.g. 24h, 30m); default: until removed.
        #[arg(long = "for", value_name = "DURATION")]
        lasts: Option<String>,
    },
    /// Print every rule as JSON.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print one rule as JSON.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The rule's id.
        id: String,
    },
    /// Remove a rule; every node stops applying it within a second.
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The rule's id.
        id: String,
        /// Who removes it.
        #[arg(long)]
        by: String,
    },
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
    /// Rotate the fleet's TLS session-ticket keys now: every node hears of it at once and
    /// seals with the new key 2 s later. Twice after a suspected leak: every ticket sealed
    /// before is then refused.
    RotateTickets {
        #[command(flatten)]
        config: ConfigArg,
        /// Replace a stored set no node can open (damaged, or sealed with a master key no
        /// longer configured).
        #[arg(long)]
        force: bool,
    },
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
        /// The customer's own proxy or CDN terminates TLS for HOST with its own certificate:
        /// no certificate is ordered, and `verify` checks through that proxy. Adding an existing
        /// domain sets the flag to what this says (a change makes it pending again).
        #[arg(long)]
        fronted: bool,
    },
    /// Check HOST's DNS and proxy setup; on success mark it verified and, with `acme`
    /// configured, order its certificate at once. A fronted domain is checked through the
    /// customer's proxy (HTTPS, then HTTP) and never ordered one. On failure, say what is wrong.
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
    /// List every domain, one per line: host, state, region, workspace, `fronted` or `-`, last
    /// error.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move a workspace's links to a new domain: register NEW (pending) for OLD's workspace,
    /// region and fronted flag, and retire OLD. OLD's links keep redirecting and recording; no
    /// new link may be minted on it; only `remove` removes it.
    Move {
        #[command(flatten)]
        config: ConfigArg,
        /// The domain being retired.
        old: String,
        /// The domain new links go on (not registered yet).
        new: String,
    },
    /// Remove a domain from the registry (retired or not).
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        /// The tracking host.
        host: String,
    },
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
        /// Mint a trap: a link to hide in the email (no person sees or follows it), whose
        /// click is recorded as `machine` and marks the clicking address as a scanner for the
        /// rest of the message (README, "Machine clicks").
        #[arg(long)]
        trap: bool,
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

impl LinkIds {
    fn ids(&self) -> link::Ids {
        link::Ids {
            workspace: self.workspace,
            message: self.message,
            link: self.link,
        }
    }
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
    let result: cli::Outcome = match &cli.command {
        Command::Serve {
            config,
            daemon,
            upgrade,
            test,
        } => cli::load(&config.config).and_then(|s| {
            let process = ProcessOptions {
                daemon: *daemon,
                upgrade: *upgrade,
                test: *test,
            };
            server::run(s, process)
                .map(|_| true)
                .map_err(|e| format!("{e:#}"))
        }),
        Command::Check {
            config,
            offline,
            online,
        } => cli::check(&config.config, *offline, *online),
        Command::Reload { config, log } => cli::reload::reload(&config.config, log.as_deref()),
        Command::Block(cmd) => match cmd {
            BlockCommand::Add {
                config,
                url,
                prefix,
                host,
                subdomains,
                workspace,
                message,
                domain,
                action,
                reason,
                by,
                lasts,
            } => {
                use linkedge::blocks::{Action, Target};
                let target = match (url, prefix, host, subdomains, workspace, message, domain) {
                    (Some(url), ..) => Some(Target::Url { url: url.clone() }),
                    (_, Some(prefix), ..) => Some(Target::Prefix {
                        prefix: prefix.clone(),
                    }),
                    (_, _, Some(host), ..) => Some(Target::Host { host: host.clone() }),
                    (_, _, _, Some(host), ..) => Some(Target::Subdomains { host: host.clone() }),
                    (_, _, _, _, Some(w), Some(m), _) => Some(Target::Message {
                        workspace: *w,
                        message: *m,
                    }),
                    (_, _, _, _, Some(w), None, _) => Some(Target::Workspace { workspace: *w }),
                    (.., Some(d)) => Some(Target::Domain { domain: d.clone() }),
                    _ => None,
                };
                let lasts = match lasts {
                    Some(l) => match linkedge::config::parse_duration(l) {
                        Some(d) if !d.is_zero() => Ok(Some(d)),
                        _ => Err(format!(
                            "--for {l:?}: expected a duration such as 24h or 30m"
                        )),
                    },
                    None => Ok(None),
                };
                match (target, lasts) {
                    (None, _) => Err("say what the rule matches: one of --url, --prefix, --host, --subdomains, --workspace [--message], --domain".to_string()),
                    (_, Err(e)) => Err(e),
                    (Some(target), Ok(lasts)) => {
                        let action = if action == "block" { Action::Block } else { Action::Warn };
                        cli::block::add(&config.config, target, action, (reason, by), lasts)
                    }
                }
            }
            BlockCommand::List { config } => cli::block::list(&config.config),
            BlockCommand::Show { config, id } => cli::block::get(&config.config, id),
            BlockCommand::Remove { config, id, by } => cli::block::remove(&config.config, id, by),
        },
        Command::Rewrite {
            config,
            host,
            workspace,
            message,
            text,
            no_pixel,
            report,
        } => cli::link::rewrite(
            &config.config,
            host,
            (*workspace, *message),
            (*text, !*no_pixel),
            report.as_deref(),
        ),
        Command::Link(LinkCommand::Mint {
            config,
            host,
            url,
            trap,
            ids,
        }) => link::mint(
            &config.config,
            host,
            (Kind::Click, *trap),
            url.clone(),
            ids.ids(),
        ),
        Command::Link(LinkCommand::Pixel { config, host, ids }) => link::mint(
            &config.config,
            host,
            (Kind::Open, false),
            String::new(),
            ids.ids(),
        ),
        Command::Link(LinkCommand::Decode { config, url }) => link::decode(&config.config, url),
        Command::Domain(cmd) => match cmd {
            DomainCommand::Add {
                config,
                host,
                workspace,
                region,
                fronted,
            } => domain::add(&config.config, host, *workspace, region, *fronted),
            DomainCommand::Verify { config, host } => domain::verify(&config.config, host),
            DomainCommand::Show { config, host } => domain::get(&config.config, host),
            DomainCommand::List { config } => domain::list(&config.config),
            DomainCommand::Move { config, old, new } => domain::move_to(&config.config, old, new),
            DomainCommand::Remove { config, host } => domain::remove(&config.config, host),
        },
        Command::Cert(cmd) => match cmd {
            CertCommand::Import {
                config,
                host,
                cert: chain,
                key,
            } => cert::import(&config.config, host, chain, key),
            CertCommand::Show { config, host } => cert::show(&config.config, host),
            CertCommand::Remove { config, host } => cert::remove(&config.config, host),
            CertCommand::RotateTickets { config, force } => {
                cert::rotate_tickets(&config.config, *force)
            }
        },
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
