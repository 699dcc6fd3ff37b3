//! Every Prometheus metric linkedge exports, in one place. Names carry the `linkedge_` prefix and
//! their unit; label values come from small fixed sets (never a hostname or URL).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    TextEncoder, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge,
};
use std::sync::LazyLock;

/// How a request was served: the values of the `route` label of the request metrics. The
/// routing decision itself is [`crate::edge::route`]'s; this is only its label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// `/c/<token>`.
    Click,
    /// `/o/<token>`.
    Open,
    /// `/health`.
    Health,
    /// Anything else, answered by the edge (404, 421).
    Other,
    /// Proxied to a regional track backend.
    Proxy,
    /// `/.well-known/acme-challenge/` and `/.well-known/linkedge/verify/`.
    WellKnown,
}

impl Served {
    /// The `route` label (and the access log's `route`).
    pub fn label(self) -> &'static str {
        match self {
            Served::Click => "click",
            Served::Open => "open",
            Served::Health => "health",
            Served::Other => "other",
            Served::Proxy => "proxy",
            Served::WellKnown => "well_known",
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_requests_total",
            "Requests answered, by route and status code."
        ),
        &["route", "status"]
    )
    .expect("metric registers")
});

static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        HistogramOpts::new(
            "linkedge_request_duration_seconds",
            "Time from the request header read to the response written, by route."
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["route"]
    )
    .expect("metric registers")
});

static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_events_total",
            "Click and open events by event sink and outcome: written, spooled, spilled (an unanswered batch also spooled after events.memory_window), replayed, already_written."
        ),
        &["sink", "outcome"]
    )
    .expect("metric registers")
});

static AWAITING_REPLICAS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "linkedge_events_awaiting_replicas",
        "Events of a batch sent with a WAIT for events.min_replicas replicas and not yet \
         answered (XADDs and WAIT), by event sink.",
        &["sink"]
    )
    .expect("metric registers")
});

static REPLICA_WAITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_events_replica_waits_total",
            "Batches whose WAIT for events.min_replicas replicas was confirmed, or fell short \
             within events.replica_timeout (the batch then spooled as uncertain, checked \
             against the stream on replay), by event sink and result."
        ),
        &["sink", "result"]
    )
    .expect("metric registers")
});

static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_events_dropped_total",
            "Events lost, by event sink and reason: spool_full, spool_io, spool_corrupt."
        ),
        &["sink", "reason"]
    )
    .expect("metric registers")
});

static TOKEN_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_token_failures_total",
            "Link tokens refused, by reason."
        ),
        &["reason"]
    )
    .expect("metric registers")
});

/// Requests whose token was genuine but minted for another Host (answered 403).
pub static HOST_MISMATCH: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "linkedge_host_mismatch_total",
        "Links refused with 'Invalid link security token' because the Host differs from the one \
         they were minted for (a proxy in front rewrote the Host header)."
    )
    .expect("metric registers")
});

static EVENT_QUEUE_DEPTH: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "linkedge_event_queue_depth",
        "Events waiting in an event sink's in-memory queue.",
        &["sink"]
    )
    .expect("metric registers")
});

static SPOOL_BYTES: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "linkedge_event_spool_bytes",
        "Bytes of events held in an event sink's on-disk spool.",
        &["sink"]
    )
    .expect("metric registers")
});

static SPOOL_FILL: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    prometheus::register_gauge_vec!(
        "linkedge_event_spool_fill_ratio",
        "Fraction of events.spool.max_bytes an event sink's spool uses; at 1 its new events are dropped.",
        &["sink"]
    )
    .expect("metric registers")
});

static SPOOL_STRANDED: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "linkedge_event_spool_stranded_dirs",
        "Spool directories of another user in an event sink's spool that this process cannot \
         take over (linkedge run once as root): their events wait there until chowned.",
        &["sink"]
    )
    .expect("metric registers")
});

static REDIS_WRITE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        HistogramOpts::new(
            "linkedge_redis_write_duration_seconds",
            "Time for one pipelined XADD batch to an event sink's Redis, successful or not."
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["sink"]
    )
    .expect("metric registers")
});

/// The event metrics of one event sink (`default`, or a region's name), resolved once.
#[derive(Clone)]
pub struct SinkMetrics {
    /// The sink's name, the `sink` label.
    pub sink: &'static str,
    /// Events waiting in its queue.
    pub queue_depth: IntGauge,
    /// Bytes in its spool.
    pub spool_bytes: IntGauge,
    /// Fraction of its spool's bound in use.
    pub spool_fill: prometheus::Gauge,
    /// Duration of its batch writes.
    pub write_seconds: Histogram,
    /// Events of a batch sent with a `WAIT` for `events.min_replicas` replicas, not yet answered.
    pub awaiting_replicas: IntGauge,
    /// Other users' spool directories it cannot take over.
    pub spool_stranded: IntGauge,
}

impl SinkMetrics {
    /// The metrics of sink `sink`, every series created (at zero) now.
    pub fn new(sink: &'static str) -> SinkMetrics {
        let m = SinkMetrics {
            sink,
            queue_depth: EVENT_QUEUE_DEPTH.with_label_values(&[sink]),
            spool_bytes: SPOOL_BYTES.with_label_values(&[sink]),
            spool_fill: SPOOL_FILL.with_label_values(&[sink]),
            write_seconds: REDIS_WRITE_SECONDS.with_label_values(&[sink]),
            awaiting_replicas: AWAITING_REPLICAS.with_label_values(&[sink]),
            spool_stranded: SPOOL_STRANDED.with_label_values(&[sink]),
        };
        for r in ["confirmed", "short"] {
            m.replica_waits(r);
        }
        for o in [
            "written",
            "spooled",
            "spilled",
            "replayed",
            "already_written",
        ] {
            m.outcome(o);
        }
        for r in ["spool_full", "spool_io", "spool_corrupt"] {
            m.dropped(r);
        }
        m
    }

    /// The counter of this sink's events with an outcome.
    pub fn outcome(&self, outcome: &str) -> IntCounter {
        EVENTS.with_label_values(&[self.sink, outcome])
    }

    /// The counter of this sink's `WAIT`s for `events.min_replicas` by result: `confirmed`,
    /// or `short` (fewer replicas within `events.replica_timeout`: the batch was spooled as
    /// uncertain).
    pub fn replica_waits(&self, result: &str) -> IntCounter {
        REPLICA_WAITS.with_label_values(&[self.sink, result])
    }

    /// The counter of this sink's events lost for a reason.
    pub fn dropped(&self, reason: &str) -> IntCounter {
        DROPPED.with_label_values(&[self.sink, reason])
    }
}

/// Per-route handles resolved once, so the request path does no label lookup.
pub struct RouteMetrics {
    duration: Histogram,
    statuses: [(u16, IntCounter); 7],
    route: Served,
}

const STATUSES: [u16; 7] = [200, 302, 400, 403, 404, 405, 421];

impl RouteMetrics {
    fn new(route: Served) -> RouteMetrics {
        let l = route.label();
        RouteMetrics {
            duration: REQUEST_SECONDS.with_label_values(&[l]),
            statuses: STATUSES.map(|s| (s, REQUESTS.with_label_values(&[l, &s.to_string()]))),
            route,
        }
    }

    /// Counts one answered request and its duration.
    pub fn observe(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        match self.statuses.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => c.inc(),
            None => REQUESTS
                .with_label_values(&[self.route.label(), &status.to_string()])
                .inc(),
        }
    }
}

static ROUTES: LazyLock<[RouteMetrics; 6]> = LazyLock::new(|| {
    [
        RouteMetrics::new(Served::Click),
        RouteMetrics::new(Served::Open),
        RouteMetrics::new(Served::Health),
        RouteMetrics::new(Served::Other),
        RouteMetrics::new(Served::Proxy),
        RouteMetrics::new(Served::WellKnown),
    ]
});

/// The metric handles of a way of serving.
pub fn served(r: Served) -> &'static RouteMetrics {
    &ROUTES[r as usize]
}

/// The counter of token failures for a reason.
pub fn token_failure(reason: &str) -> IntCounter {
    TOKEN_FAILURES.with_label_values(&[reason])
}

/// Registers every metric so `/metrics` lists them (at zero) from the start.
pub fn init() {
    LazyLock::force(&ROUTES);
    LazyLock::force(&HOST_MISMATCH);
    LazyLock::force(&TOKEN_FAILURES);
    LazyLock::force(&CONNECTIONS_OPEN);
    LazyLock::force(&REGISTRY_DOMAINS);
    LazyLock::force(&REGISTRY_SYNCED);
    LazyLock::force(&REGISTRY_CHANGES);
    LazyLock::force(&REGISTRY_LOADS);
    LazyLock::force(&BLOCK_RULES);
    LazyLock::force(&BLOCKS_SYNCED);
    LazyLock::force(&TICKET_ROTATIONS);
    LazyLock::force(&TICKET_KEYS_VERSION);
    LazyLock::force(&TICKET_KEYS_UNREADABLE);
    for a in ["block", "warn", "continue"] {
        blocked_click(a);
    }
    for r in ["per_ip", "global"] {
        connection_refused(r);
    }
    for r in [
        "handshake_timeout",
        "handshake_failed",
        "header_timeout",
        "idle_timeout",
        "evicted",
    ] {
        connection_closed(r);
    }
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut buf)
        .expect("text encoding succeeds");
    buf
}

static BACKEND_HEALTHY: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "linkedge_backend_healthy",
        "1 while a track backend passes its health checks, 0 while it is out of rotation.",
        &["region", "backend"]
    )
    .expect("metric registers")
});

/// The health gauge of one backend (`backend` is its configured address, with the resolved
/// address when it is a name).
pub fn backend_healthy(region: &str, backend: &str) -> IntGauge {
    BACKEND_HEALTHY.with_label_values(&[region, backend])
}

/// Drops the health gauge of a backend that is gone (its name no longer resolves to it).
pub fn backend_gone(region: &str, backend: &str) {
    let _ = BACKEND_HEALTHY.remove_label_values(&[region, backend]);
}

static UPSTREAM_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_upstream_requests_total",
            "Requests proxied to the track backends, by region and status sent downstream."
        ),
        &["region", "status"]
    )
    .expect("metric registers")
});

/// Counts one proxied request.
pub fn upstream_request(region: &str, status: u16) {
    UPSTREAM_REQUESTS
        .with_label_values(&[region, &status.to_string()])
        .inc();
}

static UPSTREAM_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        HistogramOpts::new(
            "linkedge_upstream_duration_seconds",
            "Time from choosing a backend to the end of the proxied response, by region."
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["region"]
    )
    .expect("metric registers")
});

/// Observes one proxied request's duration.
pub fn upstream_seconds(region: &str, seconds: f64) {
    UPSTREAM_SECONDS
        .with_label_values(&[region])
        .observe(seconds);
}

static UPSTREAM_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_upstream_events_total",
            "Upstream retries (after a connect failure), failovers (to the fallback region) and \
             fail_open (no healthy backend anywhere allowed: an unhealthy one tried anyway), \
             by region they happened in."
        ),
        &["region", "event"]
    )
    .expect("metric registers")
});

/// Counts a retry or a failover.
pub fn upstream_event(region: &str, event: &str) {
    UPSTREAM_EVENTS.with_label_values(&[region, event]).inc();
}

static UPSTREAM_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_upstream_connections_total",
            "Upstream connections used per proxied request: reused from the pool or new."
        ),
        &["reused"]
    )
    .expect("metric registers")
});

/// Counts an upstream connection use.
pub fn upstream_connection(reused: bool) {
    UPSTREAM_CONNECTIONS
        .with_label_values(&[if reused { "true" } else { "false" }])
        .inc();
}

static CERT_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_cert_lookups_total",
            "Handshake certificate look-ups by source: memory, redis, issued (ordered on demand), \
             pending (an on-demand order still running after acme.on_demand_wait), \
             negative (a cached miss), \
             miss (not in Redis either), unregistered (a name the registry does not know, decided \
             from memory), no_cert (registered, without a certificate, decided from memory), \
             own (tls.cert served to no SNI or a name it covers), \
             fronted (tls.cert served to a domain fronted by the customer's own proxy), \
             fallback (tls.cert served to another name), error (Redis failed)."
        ),
        &["source"]
    )
    .expect("metric registers")
});

/// The counter of certificate look-ups from a source.
pub fn cert_lookup(source: &str) -> IntCounter {
    CERT_LOOKUPS.with_label_values(&[source])
}

/// Names held by the certificate cache (certificates and remembered misses).
pub static CERT_CACHE_ENTRIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_cert_cache_entries",
        "Names held by the in-memory certificate cache, certificates and remembered misses."
    )
    .expect("metric registers")
});

static AGENT_VERDICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_agent_verdicts_total",
            "Clicks and opens by kind, verdict (human, suspect, machine) and reason (head, ua, \
             no_ua, scanner_net, prefetch, burst, honeypot; none for human); an event with two reasons \
             counts once under each."
        ),
        &["kind", "agent", "reason"]
    )
    .expect("metric registers")
});

/// The counter of verdicts `agent` with `reason` on events of `kind` (`none`: no reason).
pub fn agent_verdict(kind: &str, agent: &str, reason: &str) -> IntCounter {
    AGENT_VERDICTS.with_label_values(&[kind, agent, reason])
}

/// Domains in this node's registry mirror.
pub static REGISTRY_DOMAINS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_registry_domains",
        "Registered domains held in this node's registry mirror."
    )
    .expect("metric registers")
});

/// When the registry mirror last loaded the whole registry.
pub static REGISTRY_SYNCED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_registry_synced_timestamp_seconds",
        "Unix time of the registry mirror's last full load (0: never); alert when it grows old."
    )
    .expect("metric registers")
});

/// Full loads of the registry into the mirror.
pub static REGISTRY_LOADS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "linkedge_registry_loads_total",
        "Full loads of the registry into this node's mirror: at start, after the change feed \
         was lost, and every registry.resync_interval."
    )
    .expect("metric registers")
});

/// Changes applied to the registry mirror from the change feed.
pub static REGISTRY_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "linkedge_registry_changes_total",
        "Registry changes applied to this node's mirror from the change feed."
    )
    .expect("metric registers")
});

static TLS_HANDSHAKES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_tls_handshakes_total",
            "Completed TLS handshakes on the HTTPS listener, by whether the session was resumed."
        ),
        &["resumed"]
    )
    .expect("metric registers")
});

/// Counts a completed handshake.
pub fn tls_handshake(resumed: bool) {
    TLS_HANDSHAKES
        .with_label_values(&[if resumed { "true" } else { "false" }])
        .inc();
}

static ACCESS_LOG: LazyLock<[IntCounter; 2]> = LazyLock::new(|| {
    let v = register_int_counter_vec!(
        Opts::new(
            "linkedge_access_log_lines_total",
            "Access log lines by outcome: written (queued for the writer), dropped (the writer was \
             behind by 65,536 lines)."
        ),
        &["outcome"]
    )
    .expect("metric registers");
    [
        v.with_label_values(&["written"]),
        v.with_label_values(&["dropped"]),
    ]
});

/// The access log's line counter for `outcome` (`written` or `dropped`).
pub fn access_log(outcome: &str) -> &'static IntCounter {
    &ACCESS_LOG[usize::from(outcome == "dropped")]
}

static ACME_ORDERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_acme_orders_total",
            "ACME orders by outcome: placed, issued, failed, rate_limited (held back, not sent)."
        ),
        &["outcome"]
    )
    .expect("metric registers")
});

/// Counts an ACME order outcome.
pub fn acme_order(outcome: &str) {
    ACME_ORDERS.with_label_values(&[outcome]).inc();
}

static ACME_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_certificate_attempts_total",
            "Certificate issuance and renewal attempts by outcome."
        ),
        &["kind", "outcome"]
    )
    .expect("metric registers")
});

/// Counts an issuance or renewal attempt.
pub fn acme_attempt(kind: &str, outcome: &str) {
    ACME_ATTEMPTS.with_label_values(&[kind, outcome]).inc();
}

/// Seconds until the earliest stored certificate expires (negative once expired; 0 when none).
pub static CERT_EARLIEST_EXPIRY_SECONDS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_certificate_earliest_expiry_seconds",
        "Seconds until the earliest stored certificate expires, as of the issuer's last pass."
    )
    .expect("metric registers")
});

static DOMAINS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "linkedge_domains",
        "Registered domains by state, as of the certificate issuer's last pass.",
        &["state"]
    )
    .expect("metric registers")
});

/// The gauge of domains in `state`.
pub fn domains(state: &str) -> IntGauge {
    DOMAINS.with_label_values(&[state])
}

/// Retired domains whose certificate is no longer renewed because they stopped resolving to the
/// edge (`domain move`), as of the issuer's last pass: expected, not a failure.
pub static RETIRED_RENEWALS_STOPPED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_retired_renewals_stopped",
        "Retired domains no longer resolving to the edge, whose renewal stopped, as of the \
         certificate issuer's last pass."
    )
    .expect("metric registers")
});

static REDIS_UP: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "linkedge_redis_up",
        "1 while the Redis connection is open, 0 while it is being reopened, by connection \
         (events, state, pubsub, acme, admin).",
        &["connection"]
    )
    .expect("metric registers")
});

static REDIS_LOST: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_redis_connections_lost_total",
            "Redis connections dropped after an error or a timeout (each reopened on next use), \
             by connection."
        ),
        &["connection"]
    )
    .expect("metric registers")
});

/// The up gauge of Redis connection `name`.
pub fn redis_up(name: &str) -> IntGauge {
    REDIS_UP.with_label_values(&[name])
}

/// The lost-connection counter of Redis connection `name`.
pub fn redis_reconnects(name: &str) -> IntCounter {
    REDIS_LOST.with_label_values(&[name])
}

static REDIS_STALE_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_redis_stale_reads_total",
            "Reads sent again on a new connection because the one they went out on had gone \
             stale (idle across a Redis restart or failover), by connection."
        ),
        &["connection"]
    )
    .expect("metric registers")
});

/// The stale-read counter of Redis connection `name`.
pub fn redis_stale_reads(name: &str) -> IntCounter {
    REDIS_STALE_READS.with_label_values(&[name])
}

/// Open connections on the public listeners.
pub static CONNECTIONS_OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_connections_open",
        "Connections open on the public listeners, TLS handshakes in progress included."
    )
    .expect("metric registers")
});

static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_connections_refused_total",
            "Connections refused at a cap, by reason: per_ip (limits.max_connections_per_ip), \
             global (limits.max_connections)."
        ),
        &["reason"]
    )
    .expect("metric registers")
});

static CONNECTIONS_CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_connections_closed_total",
            "Connections the edge closed, by reason: handshake_timeout, handshake_failed, \
             header_timeout, idle_timeout, send_timeout (no write progress for \
             limits.send_timeout), body_timeout (no request-body progress for \
             limits.body_timeout), header_too_large (an HTTP/1 head over limits.max_headers or \
             max_header_bytes, answered 431), shutdown (idle while the process stops), evicted \
             (the longest-idle one, to make room at limits.max_connections)."
        ),
        &["reason"]
    )
    .expect("metric registers")
});

static STREAMS_RESET: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_streams_reset_total",
            "HTTP/2 streams the edge reset, by reason: send_timeout (the response could not be \
             written for limits.send_timeout, e.g. a flow-control window kept at zero)."
        ),
        &["reason"]
    )
    .expect("metric registers")
});

static HEADERS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_requests_header_refused_total",
            "Requests answered 431 for their header, by protocol (http1, http2) and limit \
             (fields: limits.max_headers, bytes: limits.max_header_bytes). HTTP/2 header lists \
             over max_header_bytes are refused inside the HTTP/2 codec and not counted here."
        ),
        &["protocol", "limit"]
    )
    .expect("metric registers")
});

/// The stream-reset counter for `reason`.
pub fn stream_reset(reason: &str) -> IntCounter {
    STREAMS_RESET.with_label_values(&[reason])
}

/// The counter of requests refused for their header over `protocol` (`http1`, `http2`) at
/// `limit` (`fields`, `bytes`).
pub fn header_refused(protocol: &str, limit: &str) -> IntCounter {
    HEADERS_REFUSED.with_label_values(&[protocol, limit])
}

/// The refusal counter for `reason`.
pub fn connection_refused(reason: &str) -> IntCounter {
    CONNECTIONS_REFUSED.with_label_values(&[reason])
}

/// The deadline-close counter for `reason`.
pub fn connection_closed(reason: &str) -> IntCounter {
    CONNECTIONS_CLOSED.with_label_values(&[reason])
}

static LINKS_MINTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_links_minted_total",
            "Links minted through the admin API (POST /v1/links and POST /v1/rewrite), by \
             outcome (minted, refused)."
        ),
        &["outcome"]
    )
    .expect("metric registers")
});

/// Counts one batch of `POST /v1/links`: `minted` links minted, `refused` refused.
pub fn links_minted(minted: u64, refused: u64) {
    LINKS_MINTED.with_label_values(&["minted"]).inc_by(minted);
    LINKS_MINTED.with_label_values(&["refused"]).inc_by(refused);
}

/// Block rules loaded on this node ([`crate::blocks`]).
pub static BLOCK_RULES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_block_rules",
        "Block rules loaded on this node (expired ones included until removed)."
    )
    .expect("metric registers")
});

/// Rotations of the shared session-ticket keys this node made.
pub static TICKET_ROTATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "linkedge_tls_ticket_rotations_total",
        "Rotations of the fleet's session-ticket keys made by this node (one node makes each)."
    )
    .expect("metric registers")
});

/// The version of the shared session-ticket keys in use.
pub static TICKET_KEYS_VERSION: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_tls_ticket_keys_version",
        "Version of the fleet's session-ticket keys this node seals with (0: its own keys, not \
         shared: resumption works only on this node). Nodes on different versions still open \
         each other's tickets for one rotation."
    )
    .expect("metric registers")
});

/// Whether the stored session-ticket keys fail to open on this node.
pub static TICKET_KEYS_UNREADABLE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_tls_ticket_keys_unreadable",
        "1 when the fleet's stored session-ticket keys do not open on this node (damaged, or \
         sealed with a master key it lacks): it keeps its keys and no node rotates them until \
         `linkedge cert rotate-tickets --force`."
    )
    .expect("metric registers")
});

/// When this node last confirmed it holds every block rule.
pub static BLOCKS_SYNCED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "linkedge_block_list_synced_timestamp_seconds",
        "Unix time this node last loaded every block rule or confirmed it holds them (0: never, \
         so no rule applies); alert when it grows old."
    )
    .expect("metric registers")
});

static BLOCKED_CLICKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        Opts::new(
            "linkedge_blocked_clicks_total",
            "Clicks a block rule met, by action: block (disabled page), warn (warning page), \
             continue (redirected after the warning)."
        ),
        &["action"]
    )
    .expect("metric registers")
});

/// The blocked-click counter of `action` (block, warn, continue).
pub fn blocked_click(action: &str) -> IntCounter {
    BLOCKED_CLICKS.with_label_values(&[action])
}
