//! The supervisor's counters and their OpenMetrics text (`berth metrics`).
//!
//! The supervisor counts what its serving loops do, per service; the
//! counters mirror the journal's `BERTH_EVENT` entries (a `started` entry is
//! one `berth_containers_started_total`), so the two always agree. They
//! cross D-Bus as [`ServiceMetrics`] and are rendered by the client together
//! with systemd's accounting of each running scope.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the start latency histogram's buckets; `+Inf`
/// is implied.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Why a container ended, as the `reason` label of
/// `berth_containers_stopped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The application exited by itself (or its scope was stopped).
    Exit,
    /// `idle_timeout` reached.
    Idle,
    /// `max_lifetime` reached.
    Lifetime,
    /// The supervisor stopped and ended its containers.
    Stop,
}

impl StopReason {
    pub fn key(self) -> &'static str {
        match self {
            StopReason::Exit => "exit",
            StopReason::Idle => "idle",
            StopReason::Lifetime => "lifetime",
            StopReason::Stop => "stop",
        }
    }
}

/// One service's counters as they cross D-Bus. Histogram buckets are
/// per bucket (not cumulative), one per [`LATENCY_BUCKETS`] entry plus the
/// overflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, zbus::Type)]
pub struct ServiceMetrics {
    pub service: String,
    pub accepted: u64,
    /// (reason, count)
    pub refused: Vec<(String, u64)>,
    pub started: u64,
    /// (reason, count)
    pub stopped: Vec<(String, u64)>,
    pub failed: u64,
    pub wakes: u64,
    pub warm_hits: u64,
    pub warm_misses: u64,
    pub freezes: u64,
    pub thaws: u64,
    pub latency_buckets: Vec<u64>,
    pub latency_sum_seconds: f64,
}

/// The supervisor's counters, keyed by service.
#[derive(Default)]
pub struct Metrics {
    map: Mutex<BTreeMap<String, ServiceMetrics>>,
}

impl Metrics {
    fn with(&self, service: &str, f: impl FnOnce(&mut ServiceMetrics)) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let m = map
            .entry(service.to_owned())
            .or_insert_with(|| ServiceMetrics {
                service: service.to_owned(),
                latency_buckets: vec![0; LATENCY_BUCKETS.len() + 1],
                ..Default::default()
            });
        f(m);
    }

    fn bump(list: &mut Vec<(String, u64)>, key: &str) {
        match list.iter_mut().find(|(k, _)| k == key) {
            Some((_, n)) => *n += 1,
            None => list.push((key.to_owned(), 1)),
        }
    }

    /// A connection admitted and handed to a container (inetd mode).
    pub fn accepted(&self, service: &str) {
        self.with(service, |m| m.accepted += 1);
    }

    /// A connection closed at once by a limit (`reason`: the limit's key).
    pub fn refused(&self, service: &str, reason: &str) {
        self.with(service, |m| Self::bump(&mut m.refused, reason));
    }

    /// A container started; `latency`: from the connection (or readiness)
    /// to the application's exec.
    pub fn started(&self, service: &str, latency: Duration) {
        let s = latency.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.with(service, |m| {
            m.started += 1;
            if let Some(b) = m.latency_buckets.get_mut(i) {
                *b += 1;
            }
            m.latency_sum_seconds += s;
        });
    }

    pub fn stopped(&self, service: &str, why: StopReason) {
        self.with(service, |m| Self::bump(&mut m.stopped, why.key()));
    }

    /// A container that failed to start (never ran the application).
    pub fn failed(&self, service: &str) {
        self.with(service, |m| m.failed += 1);
    }

    /// Listen mode: a connection woke the service from no container.
    pub fn wake(&self, service: &str) {
        self.with(service, |m| m.wakes += 1);
    }

    /// With `warm` set: the start used a parked sandbox (`true`) or had to
    /// build one.
    pub fn warm(&self, service: &str, hit: bool) {
        self.with(service, |m| {
            if hit {
                m.warm_hits += 1;
            } else {
                m.warm_misses += 1;
            }
        });
    }

    pub fn frozen(&self, service: &str) {
        self.with(service, |m| m.freezes += 1);
    }

    pub fn thawed(&self, service: &str) {
        self.with(service, |m| m.thaws += 1);
    }

    pub fn snapshot(&self) -> Vec<ServiceMetrics> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// One container as systemd accounts for it (`None`: not known).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSample {
    pub service: String,
    pub id: String,
    pub unit: String,
    pub state: String,
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub tasks: Option<u64>,
}

/// A label value in OpenMetrics quoting: backslash, double quote and line
/// feed escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float in OpenMetrics' canonical form (`1.0`, `0.001`, `+Inf`).
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:?}")
    }
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(out: &mut String, name: &str, kind: &str, unit: Option<&str>, help: &str) {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if let Some(u) = unit {
            let _ = writeln!(out, "# UNIT {name} {u}");
        }
        let _ = writeln!(out, "# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: &str) {
        let _ = writeln!(self.out, "{name}{} {value}", labels(pairs));
    }
}

/// A counter family with one sample per (labels, value).
fn counter(out: &mut String, name: &str, help: &str, rows: &[(Vec<(&str, &str)>, u64)]) {
    Family::header(out, name, "counter", None, help);
    let mut f = Family { out };
    for (l, v) in rows {
        f.sample(&format!("{name}_total"), l, &v.to_string());
    }
}

/// The whole exposition: `up` says whether the supervisor answered (its
/// counters are then `services`), `containers` is systemd's accounting.
pub fn render(up: bool, services: &[ServiceMetrics], containers: &[ContainerSample]) -> String {
    let mut out = String::new();
    Family::header(
        &mut out,
        "berth_up",
        "gauge",
        None,
        "Whether berth serve answered on D-Bus (1) or not (0: no counters).",
    );
    let _ = writeln!(out, "berth_up {}", u8::from(up));

    let per = |f: &dyn Fn(&ServiceMetrics) -> u64| -> Vec<(Vec<(&str, &str)>, u64)> {
        services
            .iter()
            .map(|m| (vec![("service", m.service.as_str())], f(m)))
            .collect()
    };
    let by_reason = |f: &dyn Fn(&ServiceMetrics) -> &Vec<(String, u64)>| {
        let mut rows = Vec::new();
        for m in services {
            for (r, n) in f(m) {
                rows.push((
                    vec![("service", m.service.as_str()), ("reason", r.as_str())],
                    *n,
                ));
            }
        }
        rows
    };
    counter(
        &mut out,
        "berth_connections_accepted",
        "Connections accepted and handed to a container (inetd mode).",
        &per(&|m| m.accepted),
    );
    counter(
        &mut out,
        "berth_connections_refused",
        "Connections closed at once by a limit, by the limit's key.",
        &by_reason(&|m| &m.refused),
    );
    counter(
        &mut out,
        "berth_containers_started",
        "Containers started (journal BERTH_EVENT=started).",
        &per(&|m| m.started),
    );
    counter(
        &mut out,
        "berth_containers_stopped",
        "Containers ended, by reason (exit, idle, lifetime, stop).",
        &by_reason(&|m| &m.stopped),
    );
    counter(
        &mut out,
        "berth_containers_failed",
        "Containers that failed to start.",
        &per(&|m| m.failed),
    );
    counter(
        &mut out,
        "berth_wakes",
        "Listen mode: containers started by a connection while none ran.",
        &per(&|m| m.wakes),
    );
    counter(
        &mut out,
        "berth_warm_hits",
        "Starts that used a sandbox prepared ahead (warm).",
        &per(&|m| m.warm_hits),
    );
    counter(
        &mut out,
        "berth_warm_misses",
        "Starts of a service with warm set that found no prepared sandbox.",
        &per(&|m| m.warm_misses),
    );
    counter(
        &mut out,
        "berth_freezes",
        "Containers frozen (cgroup freezer or stopped process by process).",
        &per(&|m| m.freezes),
    );
    counter(
        &mut out,
        "berth_thaws",
        "Frozen containers let run again.",
        &per(&|m| m.thaws),
    );

    let name = "berth_container_start_latency_seconds";
    Family::header(
        &mut out,
        name,
        "histogram",
        Some("seconds"),
        "From the connection (listen mode: readiness) to the application's exec.",
    );
    for m in services {
        let mut f = Family { out: &mut out };
        let svc = m.service.as_str();
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += m.latency_buckets.get(i).copied().unwrap_or(0);
            let le = float(*bound);
            f.sample(
                &format!("{name}_bucket"),
                &[("service", svc), ("le", &le)],
                &cumulative.to_string(),
            );
        }
        cumulative += m
            .latency_buckets
            .get(LATENCY_BUCKETS.len())
            .copied()
            .unwrap_or(0);
        f.sample(
            &format!("{name}_bucket"),
            &[("service", svc), ("le", "+Inf")],
            &cumulative.to_string(),
        );
        f.sample(
            &format!("{name}_count"),
            &[("service", svc)],
            &cumulative.to_string(),
        );
        f.sample(
            &format!("{name}_sum"),
            &[("service", svc)],
            &float(m.latency_sum_seconds),
        );
    }

    let ids = |c: &ContainerSample| {
        [
            ("service", c.service.clone()),
            ("container", c.id.clone()),
            ("unit", c.unit.clone()),
        ]
    };
    let mut state_rows: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in containers {
        *state_rows
            .entry((c.service.clone(), c.state.clone()))
            .or_insert(0) += 1;
    }
    Family::header(
        &mut out,
        "berth_containers",
        "gauge",
        None,
        "Containers now, by state (running, warm, ...).",
    );
    for ((svc, state), n) in &state_rows {
        let _ = writeln!(
            out,
            "berth_containers{} {n}",
            labels(&[("service", svc), ("state", state)])
        );
    }
    let gauge = |out: &mut String,
                 name: &str,
                 kind: &str,
                 unit: Option<&str>,
                 help: &str,
                 v: &dyn Fn(&ContainerSample) -> Option<String>| {
        Family::header(out, name, kind, unit, help);
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        for c in containers {
            if let Some(v) = v(c) {
                let l = ids(c);
                let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let _ = writeln!(out, "{sample}{} {v}", labels(&pairs));
            }
        }
    };
    gauge(
        &mut out,
        "berth_container_memory_bytes",
        "gauge",
        Some("bytes"),
        "Memory of the container's scope (systemd MemoryCurrent).",
        &|c| c.memory_bytes.map(|v| v.to_string()),
    );
    gauge(
        &mut out,
        "berth_container_cpu_seconds",
        "counter",
        Some("seconds"),
        "CPU time of the container's scope (systemd CPUUsageNSec).",
        &|c| c.cpu_seconds.map(float),
    );
    gauge(
        &mut out,
        "berth_container_tasks",
        "gauge",
        None,
        "Tasks in the container's scope (systemd TasksCurrent).",
        &|c| c.tasks.map(|v| v.to_string()),
    );
    out.push_str("# EOF\n");
    out
}

/// OpenMetrics' media type, as Prometheus asks for it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one HTTP request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// GET (or HEAD: `body` false) of `/metrics` or `/`.
    Metrics {
        body: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Read an HTTP/1.x request line (`GET /metrics HTTP/1.1`).
pub fn parse_request_line(line: &str) -> Request {
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::BadRequest;
    }
    let body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return Request::MethodNotAllowed,
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    match path {
        "/" | "/metrics" => Request::Metrics { body },
        _ => Request::NotFound,
    }
}

/// A whole HTTP/1.1 response (the connection closes after it).
pub fn http_response(status: &str, content_type: &str, body: &str, send_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histogram_render_as_openmetrics() {
        let m = Metrics::default();
        m.accepted("ssh");
        m.accepted("ssh");
        m.refused("ssh", "rate_limit_per_source");
        m.started("ssh", Duration::from_millis(3));
        m.started("ssh", Duration::from_secs(10));
        m.stopped("ssh", StopReason::Idle);
        let text = render(true, &m.snapshot(), &[]);
        assert!(text.contains("# TYPE berth_connections_accepted counter\n"));
        assert!(text.contains("berth_connections_accepted_total{service=\"ssh\"} 2\n"));
        assert!(text.contains(
            "berth_connections_refused_total{service=\"ssh\",reason=\"rate_limit_per_source\"} 1\n"
        ));
        assert!(
            text.contains("berth_containers_stopped_total{service=\"ssh\",reason=\"idle\"} 1\n")
        );
        assert!(text.contains("# UNIT berth_container_start_latency_seconds seconds\n"));
        let h = "berth_container_start_latency_seconds";
        // Cumulative: 3 ms is in le=0.005 and every bucket above it; 10 s
        // only in +Inf.
        assert!(text.contains(&format!("{h}_bucket{{service=\"ssh\",le=\"0.0025\"}} 0\n")));
        assert!(text.contains(&format!("{h}_bucket{{service=\"ssh\",le=\"0.005\"}} 1\n")));
        assert!(text.contains(&format!("{h}_bucket{{service=\"ssh\",le=\"2.5\"}} 1\n")));
        assert!(text.contains(&format!("{h}_bucket{{service=\"ssh\",le=\"1.0\"}} 1\n")));
        assert!(text.contains(&format!("{h}_bucket{{service=\"ssh\",le=\"+Inf\"}} 2\n")));
        assert!(text.contains(&format!("{h}_count{{service=\"ssh\"}} 2\n")));
        assert!(text.contains(&format!("{h}_sum{{service=\"ssh\"}} 10.003\n")));
        assert!(text.contains("berth_up 1\n"));
        assert!(text.ends_with("\n# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        // Every family is announced once, before its samples.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let sample = line.split(['{', ' ']).next().unwrap_or("");
            let family = sample
                .strip_suffix("_total")
                .or_else(|| sample.strip_suffix("_bucket"))
                .or_else(|| sample.strip_suffix("_count"))
                .or_else(|| sample.strip_suffix("_sum"))
                .unwrap_or(sample);
            let pos = text.find(line).unwrap_or(0);
            let decl = text
                .find(&format!("# TYPE {family} "))
                .unwrap_or(usize::MAX);
            assert!(decl < pos, "{line}: no # TYPE before it");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        let text = render(
            false,
            &[],
            &[ContainerSample {
                service: "web".into(),
                id: "ab\"c".into(),
                unit: "u\\1\n".into(),
                state: "running".into(),
                memory_bytes: Some(4096),
                cpu_seconds: Some(0.5),
                tasks: None,
            }],
        );
        assert!(text.contains(
            "berth_container_memory_bytes{service=\"web\",container=\"ab\\\"c\",unit=\"u\\\\1\\n\"} 4096\n"
        ));
        assert!(text.contains("berth_container_cpu_seconds_total{service=\"web\""));
        assert!(text.contains("} 0.5\n"));
        assert!(
            !text.contains("berth_container_tasks{"),
            "unknown values are left out"
        );
        assert!(text.contains("berth_containers{service=\"web\",state=\"running\"} 1\n"));
        assert!(text.contains("berth_up 0\n"));
    }

    #[test]
    fn http_requests() {
        assert_eq!(
            parse_request_line("GET /metrics HTTP/1.1"),
            Request::Metrics { body: true }
        );
        assert_eq!(
            parse_request_line("HEAD /?x=1 HTTP/1.0"),
            Request::Metrics { body: false }
        );
        assert_eq!(parse_request_line("GET /other HTTP/1.1"), Request::NotFound);
        assert_eq!(
            parse_request_line("POST /metrics HTTP/1.1"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse_request_line("GET /metrics"), Request::BadRequest);
        assert_eq!(parse_request_line(""), Request::BadRequest);
        let r = String::from_utf8(http_response("200 OK", CONTENT_TYPE, "x\n", false))
            .unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("Content-Length: 2\r\n"));
        assert!(r.ends_with("\r\n\r\n"), "HEAD: no body");
    }

    #[test]
    fn floats_are_canonical() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(0.001), "0.001");
        assert_eq!(float(f64::INFINITY), "+Inf");
    }
}
