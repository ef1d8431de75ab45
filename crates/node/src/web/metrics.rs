//! Prometheus metrics of the web server (`GET /metrics`, text format).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The server's counters; cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    connections_total: Counter,
    messages: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    frames_sent: Counter,
    bytes_sent: Counter,
    auth_ok: Counter,
    auth_failed: Counter,
    http_requests: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("agentos");
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            messages: Family::default(),
            refused: Family::default(),
            frames_sent: Counter::default(),
            bytes_sent: Counter::default(),
            auth_ok: Counter::default(),
            auth_failed: Counter::default(),
            http_requests: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ws_connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "ws_connections_opened",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "ws_messages",
            "Client messages received, by type",
            m.messages.clone(),
        );
        registry.register(
            "ws_refused",
            "Client messages refused (permission, bad input), by type",
            m.refused.clone(),
        );
        registry.register(
            "ws_frames_sent",
            "Binary terminal frames sent to viewers",
            m.frames_sent.clone(),
        );
        registry.register(
            "ws_bytes_sent",
            "Bytes of terminal frames sent to viewers",
            m.bytes_sent.clone(),
        );
        registry.register("share_auth_ok", "Share links redeemed", m.auth_ok.clone());
        registry.register(
            "share_auth_failed",
            "Wrong, expired or revoked share secrets presented",
            m.auth_failed.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests served",
            m.http_requests.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn conn_opened(&self) {
        self.connections.inc();
        self.connections_total.inc();
    }

    pub fn conn_closed(&self) {
        self.connections.dec();
    }

    pub fn message(&self, kind: &str) {
        self.messages
            .get_or_create(&vec![("type".into(), kind.into())])
            .inc();
    }

    pub fn refused(&self, kind: &str) {
        self.refused
            .get_or_create(&vec![("type".into(), kind.into())])
            .inc();
    }

    pub fn frame(&self, bytes: usize) {
        self.frames_sent.inc();
        self.bytes_sent.inc_by(bytes as u64);
    }

    pub fn auth(&self, ok: bool) {
        if ok {
            self.auth_ok.inc();
        } else {
            self.auth_failed.inc();
        }
    }

    pub fn http(&self) {
        self.http_requests.inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
