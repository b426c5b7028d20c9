//! `berth list`, `status`, `stop`, `logs`: what an administrator sees and
//! does. They ask the supervisor over D-Bus (`org.berth.Supervisor1`) and
//! systemd for each scope's accounting; without a supervisor they fall back
//! to what systemd knows about `berth-*.scope` and say so.

use std::process::Command;

use crate::bus::Supervisor1Proxy;
use crate::scope::{self, ScopeStats, Scopes};
use crate::supervisor::registry::{ContainerInfo, ContainerState, ServiceInfo, now_usec};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Systemd(#[from] scope::ScopeError),
    #[error("asking berth serve: {0}")]
    Supervisor(#[source] zbus::Error),
    #[error("no container or service named {0:?} is running")]
    NotFound(String),
    #[error("running journalctl: {0}")]
    Journalctl(#[source] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// One row: the supervisor's view plus systemd's accounting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub info: ContainerInfo,
    pub stats: Option<ScopeStats>,
}

/// Human units, like `podman stats`.
pub fn bytes(n: u64) -> String {
    if n == u64::MAX {
        return "-".into();
    }
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

pub fn duration_usec(us: u64) -> String {
    let s = us / 1_000_000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn cpu(ns: u64) -> String {
    if ns == u64::MAX {
        return "-".into();
    }
    format!("{:.2}s", ns as f64 / 1e9)
}

fn num(n: u64) -> String {
    if n == u64::MAX {
        "-".into()
    } else {
        n.to_string()
    }
}

/// Rows from the supervisor, or from systemd alone (the bool says which).
pub(crate) async fn rows() -> Result<(Vec<Row>, bool), AdminError> {
    let scopes = Scopes::connect().await?;
    let from_supervisor = match Supervisor1Proxy::new(&scopes.connection().await?).await {
        Ok(p) => p.list_containers().await.ok(),
        Err(_) => None,
    };
    let live = from_supervisor.is_some();
    // systemd's list adds what the supervisor does not run itself:
    // `berth inetd` containers (Accept=yes), or everything without it.
    let mut infos = from_supervisor.unwrap_or_default();
    {
        let mut list = Vec::new();
        {
            for (unit, procs) in scopes.list().await? {
                let Some((service, id)) = scope::parse_unit_name(&unit) else {
                    continue;
                };
                if infos.iter().any(|i| i.unit == unit) {
                    continue;
                }
                list.push(ContainerInfo {
                    id: id.into(),
                    service: service.into(),
                    unit: unit.clone(),
                    pid: procs.iter().map(|(p, _)| *p).min().unwrap_or(0),
                    state: ContainerState::Running,
                    started_usec: 0,
                    connections: 0,
                    idle_deadline_usec: 0,
                    peer: String::new(),
                    generation: String::new(),
                });
            }
        }
        infos.extend(list);
    }
    let mut out = Vec::new();
    for mut info in infos {
        let stats = if info.unit.is_empty() {
            None
        } else {
            scopes.stats(&info.unit).await.ok()
        };
        if info.started_usec == 0
            && let Some(s) = &stats
        {
            info.started_usec = s.active_enter_usec;
        }
        out.push(Row { info, stats });
    }
    Ok((out, live))
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("berth: starting the async runtime: {e}");
            std::process::exit(1)
        })
}

const FALLBACK: &str = "berth serve is not running: showing what systemd knows about berth-*.scope (no connection counts or idle timers)";

pub fn list(json: bool) -> Result<(), AdminError> {
    let (rows, live) = runtime().block_on(rows())?;
    if json {
        let v = serde_json::json!({ "supervisor": live, "containers": rows });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(AdminError::Json)?
        );
        return Ok(());
    }
    if !live {
        eprintln!("{FALLBACK}");
    }
    let now = now_usec();
    let header = [
        "UNIT", "SERVICE", "PID", "STATE", "UPTIME", "CONNS", "MEMORY", "CPU", "TASKS", "IDLE",
        "DEF",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &rows {
        let i = &r.info;
        let st = r.stats.clone().unwrap_or_default();
        let have = r.stats.is_some();
        table.push(vec![
            if i.unit.is_empty() {
                format!("({})", i.id)
            } else {
                i.unit.clone()
            },
            i.service.clone(),
            if i.pid == 0 {
                "-".into()
            } else {
                i.pid.to_string()
            },
            i.state.to_string(),
            if i.started_usec == 0 || i.started_usec == u64::MAX {
                "-".into()
            } else {
                duration_usec(now.saturating_sub(i.started_usec))
            },
            if live {
                i.connections.to_string()
            } else {
                "-".into()
            },
            if have {
                bytes(st.memory_current)
            } else {
                "-".into()
            },
            if have {
                cpu(st.cpu_usage_nsec)
            } else {
                "-".into()
            },
            if have {
                num(st.tasks_current)
            } else {
                "-".into()
            },
            if i.idle_deadline_usec == 0 {
                "-".into()
            } else {
                duration_usec(i.idle_deadline_usec.saturating_sub(now))
            },
            if i.generation.is_empty() {
                "-".into()
            } else {
                i.generation.clone()
            },
        ]);
    }
    print_table(&table);
    Ok(())
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{v:<w$}", w = widths[c]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn is_container_name(name: &str) -> bool {
    name.ends_with(".scope") || (name.len() == 12 && name.chars().all(|c| c.is_ascii_hexdigit()))
}

fn matches(r: &Row, name: &str) -> bool {
    if is_container_name(name) {
        r.info.id == name || r.info.unit == name
    } else {
        r.info.service == name
    }
}

/// The supervisor's view of every service (throttle, definition), if it runs.
async fn services() -> Vec<ServiceInfo> {
    let ask = async {
        let conn = zbus::Connection::system().await.ok()?;
        let p = Supervisor1Proxy::new(&conn).await.ok()?;
        p.list_services().await.ok()
    };
    ask.await.unwrap_or_default()
}

fn print_throttle(t: &Option<crate::supervisor::registry::ServiceInfo>) {
    let Some(t) = t else { return };
    if t.failures == 0 && t.throttled_until_usec == 0 {
        return;
    }
    let now = now_usec();
    if t.throttled_until_usec > now {
        println!(
            "Throttled:      {} failed starts in a row; next start in {}",
            t.failures,
            duration_usec(t.throttled_until_usec - now)
        );
    } else {
        println!("Failed starts:  {} in a row", t.failures);
    }
}

pub fn status(name: &str) -> Result<(), AdminError> {
    let rt = runtime();
    let (rows, live) = rt.block_on(rows())?;
    let services = rt.block_on(services());
    let info_of = |service: &str| services.iter().find(|s| s.name == service).cloned();
    let mine: Vec<&Row> = rows.iter().filter(|r| matches(r, name)).collect();
    if !live {
        println!("({FALLBACK})");
    }
    if mine.is_empty() {
        if is_container_name(name) {
            return Err(AdminError::NotFound(name.into()));
        }
        print_idle_service(name, &info_of(name));
        return Ok(());
    }
    let now = now_usec();
    for r in mine {
        print_container(r, &info_of(&r.info.service), live, now);
        if live && r.info.state == ContainerState::Running {
            print_history(&rt.block_on(history(&r.info.id)));
        }
        println!();
    }
    Ok(())
}

/// `berth status SERVICE` of a service without containers.
fn print_idle_service(name: &str, throttle: &Option<ServiceInfo>) {
    println!("Service:        {name}");
    println!("Containers:     none running");
    if let Some(t) = throttle {
        println!("Definition:     {} (current)", t.generation);
    }
    print_throttle(throttle);
    recent_logs(&service_matches(name), 10);
}

/// One container's block of `berth status`; `live`: the supervisor
/// answered, so connection counts and idle timers are known.
fn print_container(r: &Row, throttle: &Option<ServiceInfo>, live: bool, now: u64) {
    let i = &r.info;
    let st = r.stats.clone().unwrap_or_default();
    println!(
        "Name:           {}",
        if i.unit.is_empty() { &i.id } else { &i.unit }
    );
    println!("Service:        {}", i.service);
    print_throttle(throttle);
    println!("Container:      {}", i.id);
    println!("State:          {}", i.state);
    println!("Definition:     {}", definition(&i.generation, throttle));
    println!(
        "PID:            {}",
        if i.pid == 0 {
            "-".into()
        } else {
            i.pid.to_string()
        }
    );
    if i.started_usec != 0 && i.started_usec != u64::MAX {
        println!(
            "Uptime:         {}",
            duration_usec(now.saturating_sub(i.started_usec))
        );
    }
    if !i.peer.is_empty() {
        println!("Peer:           {}", i.peer);
    }
    println!("CPU use:        {}", cpu(st.cpu_usage_nsec));
    println!(
        "Memory use:     {} (max {}, high {})",
        bytes(st.memory_current),
        bytes(st.memory_max),
        bytes(st.memory_high)
    );
    println!(
        "IO:             read {}, written {}",
        bytes(st.io_read_bytes),
        bytes(st.io_write_bytes)
    );
    println!(
        "Tasks:          {} (max {})",
        num(st.tasks_current),
        num(st.tasks_max)
    );
    println!(
        "CPU weight:     {}   CPU quota: {}   IO weight: {}",
        num(st.cpu_weight),
        if st.cpu_quota_per_sec_usec == u64::MAX {
            "-".into()
        } else {
            format!("{}%", st.cpu_quota_per_sec_usec / 10_000)
        },
        num(st.io_weight)
    );
    if live {
        println!("Connections:    {}", i.connections);
        println!(
            "Idle timer:     {}",
            if i.idle_deadline_usec == 0 {
                "-".into()
            } else {
                format!(
                    "ends in {}",
                    duration_usec(i.idle_deadline_usec.saturating_sub(now))
                )
            }
        );
    }
    if !st.control_group.is_empty() {
        println!("Cgroup:         {}", st.control_group);
    }
    if !i.unit.is_empty() {
        recent_logs(&[format!("_SYSTEMD_UNIT={}", i.unit)], 10);
    }
}

/// The supervisor's samples of one container (empty if it has none).
async fn history(id: &str) -> crate::supervisor::history::Samples {
    let ask = async {
        let conn = zbus::Connection::system().await.ok()?;
        let p = Supervisor1Proxy::new(&conn).await.ok()?;
        p.history(id).await.ok()
    };
    ask.await.unwrap_or_default()
}

/// Sparklines of memory and CPU over the container's life.
fn print_history(h: &crate::supervisor::history::Samples) {
    if h.memory.is_empty() {
        println!(
            "History:        none yet (sampled every {:?})",
            crate::supervisor::history::SAMPLE_EVERY
        );
        return;
    }
    let span = duration_usec(h.every_ms * 1000 * h.memory.len() as u64);
    let peak_mem = h.memory.iter().copied().max().unwrap_or(0);
    println!(
        "Memory history: {} now {}, peak {} (over {span})",
        crate::top::sparkline(&h.memory, 40),
        bytes(h.memory.last().copied().unwrap_or(0)),
        bytes(peak_mem)
    );
    let unknown = crate::supervisor::history::UNKNOWN;
    if h.cpu_permille.iter().all(|p| *p == unknown) {
        println!("CPU history:    not accounted by systemd for this scope");
        return;
    }
    let cpu: Vec<u64> = h
        .cpu_permille
        .iter()
        .map(|p| if *p == unknown { 0 } else { u64::from(*p) })
        .collect();
    let peak_cpu = cpu.iter().copied().max().unwrap_or(0);
    println!(
        "CPU history:    {} now {:.1}%, peak {:.1}% (over {span})",
        crate::top::sparkline(&cpu, 40),
        cpu.last().copied().unwrap_or(0) as f64 / 10.0,
        peak_cpu as f64 / 10.0
    );
}

/// Which definition a container runs, against the one in force.
pub fn definition(generation: &str, service: &Option<ServiceInfo>) -> String {
    match service {
        _ if generation.is_empty() => "unknown (started by an earlier supervisor)".into(),
        Some(s) if s.generation == generation => format!("{generation} (current)"),
        Some(s) => format!(
            "{generation} (old: reloaded since, new containers use {})",
            s.generation
        ),
        None => generation.into(),
    }
}

fn recent_logs(matches: &[String], n: usize) {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-q", "-o", "short-iso", "-n", &n.to_string()])
        .args(matches)
        .output();
    println!("Recent log:");
    match out {
        Ok(o) => {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                println!("  {l}");
            }
        }
        Err(e) => println!("  (journalctl: {e})"),
    }
}

/// The unit systemd runs `berth serve` as.
const SUPERVISOR_UNIT: &str = "berth.service";

/// The slice systemd puts instances of the template `NAME@.service` in
/// (where `berth inetd` runs for an `Accept=yes` socket): `system-NAME.slice`
/// with NAME escaped as systemd escapes unit name prefixes ('-' is `\x2d`;
/// service names are `[a-z0-9][a-z0-9_-]*`, nothing else needs escaping).
fn inetd_slice(service: &str) -> String {
    format!("system-{}.slice", service.replace('-', "\\x2d"))
}

/// journalctl matches for a service. Only fields no container can set
/// count (journald derives `_SYSTEMD_*` from the sender's cgroup; an
/// application can forge `SYSLOG_IDENTIFIER` through /dev/log and, given a
/// bind of journald's native socket, any `BERTH_*` field): the output of
/// its scopes (all in its slice), and the events of the supervisor
/// (`berth.service`) and of its `berth inetd` instances about it.
pub fn service_matches(name: &str) -> Vec<String> {
    vec![
        format!("_SYSTEMD_SLICE={}", scope::slice_name(name)),
        "+".into(),
        format!("_SYSTEMD_UNIT={SUPERVISOR_UNIT}"),
        format!("BERTH_SERVICE={name}"),
        "+".into(),
        format!("_SYSTEMD_SLICE={}", inetd_slice(name)),
        format!("BERTH_SERVICE={name}"),
    ]
}

/// journalctl matches for a container (id or scope name): its scope's
/// output and the events about it, as for [`service_matches`]. `unit` is
/// its scope when known (always for a scope name; for an id, found in the
/// journal by [`scope_of_id`]).
pub fn container_matches(name: &str, unit: Option<&str>) -> Vec<String> {
    let (service, id) = match unit.and_then(scope::parse_unit_name) {
        Some((service, id)) => (Some(service), id),
        None => (None, name),
    };
    let mut m = Vec::new();
    if let Some(unit) = unit {
        m.extend([format!("_SYSTEMD_UNIT={unit}"), "+".into()]);
    }
    m.extend([
        format!("_SYSTEMD_UNIT={SUPERVISOR_UNIT}"),
        format!("BERTH_CONTAINER={id}"),
    ]);
    if let Some(service) = service {
        m.extend([
            "+".into(),
            format!("_SYSTEMD_SLICE={}", inetd_slice(service)),
            format!("BERTH_CONTAINER={id}"),
        ]);
    }
    m
}

/// The scope `berth-SERVICE-ID.scope` of a container id, among the units
/// the journal has entries of.
fn scope_of_id(id: &str) -> Option<String> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-F", "_SYSTEMD_UNIT"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|u| scope::parse_unit_name(u).is_some_and(|(_, i)| i == id))
        .map(str::to_owned)
}

pub fn stop(name: &str) -> Result<u32, AdminError> {
    runtime().block_on(async {
        let scopes = Scopes::connect().await?;
        if let Ok(p) = Supervisor1Proxy::new(&scopes.connection().await?).await {
            let r = if is_container_name(name) {
                p.stop_container(name).await
            } else {
                p.stop_service(name).await
            };
            match r {
                Ok(n) => return Ok(n),
                Err(zbus::Error::MethodError(ref e, _, _))
                    if e.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" => {}
                Err(e) => return Err(AdminError::Supervisor(e)),
            }
        }
        // No supervisor: stop the scopes through systemd directly.
        let mut n = 0;
        for (unit, _) in scopes.list().await? {
            let Some((service, id)) = scope::parse_unit_name(&unit) else {
                continue;
            };
            if unit == name || id == name || service == name {
                scopes.stop(&unit).await?;
                n += 1;
            }
        }
        if n == 0 {
            return Err(AdminError::NotFound(name.into()));
        }
        Ok(n)
    })
}

/// The OpenMetrics exposition: the supervisor's counters (none, and
/// `berth_up 0`, when it does not run) and systemd's accounting of every
/// container.
async fn metrics_text() -> Result<String, AdminError> {
    let counters = {
        let scopes = Scopes::connect().await?;
        match Supervisor1Proxy::new(&scopes.connection().await?).await {
            Ok(p) => match p.metrics().await {
                Ok(m) => Some(m),
                Err(zbus::Error::MethodError(ref e, _, _))
                    if e.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" =>
                {
                    None
                }
                Err(e) => return Err(AdminError::Supervisor(e)),
            },
            Err(_) => None,
        }
    };
    let (rows, _) = rows().await?;
    let samples: Vec<crate::metrics::ContainerSample> = rows
        .iter()
        .map(|r| {
            let known = |v: u64| (v != u64::MAX).then_some(v);
            let st = r.stats.as_ref();
            crate::metrics::ContainerSample {
                service: r.info.service.clone(),
                id: r.info.id.clone(),
                unit: r.info.unit.clone(),
                state: r.info.state.to_string(),
                memory_bytes: st.and_then(|s| known(s.memory_current)),
                cpu_seconds: st
                    .and_then(|s| known(s.cpu_usage_nsec))
                    .map(|ns| ns as f64 / 1e9),
                tasks: st.and_then(|s| known(s.tasks_current)),
            }
        })
        .collect();
    Ok(crate::metrics::render(
        counters.is_some(),
        counters.as_deref().unwrap_or_default(),
        &samples,
    ))
}

/// `berth metrics [--http]`. With `http`, one request is read from stdin
/// and answered on stdout (an `Accept=yes` socket's connection).
pub fn metrics(http: bool) -> Result<(), AdminError> {
    use crate::metrics::{CONTENT_TYPE, Request, http_response};
    use std::io::{BufRead, Read, Write};
    let io = |what| move |source| AdminError::Io { what, source };
    if !http {
        let text = runtime().block_on(metrics_text())?;
        return std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(io("writing to stdout"));
    }
    // The request line, then headers up to the empty line (bounded: a
    // client cannot make this read forever into memory).
    let mut input = std::io::stdin().lock();
    let mut line = String::new();
    input
        .by_ref()
        .take(8192)
        .read_line(&mut line)
        .map_err(io("reading the HTTP request"))?;
    let req = crate::metrics::parse_request_line(line.trim_end());
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        let n = input
            .by_ref()
            .take(8192)
            .read_line(&mut header)
            .map_err(io("reading the HTTP request"))?;
        if n == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    let mut result = Ok(());
    let answer = match req {
        Request::Metrics { body } => match runtime().block_on(metrics_text()) {
            Ok(text) => http_response("200 OK", CONTENT_TYPE, &text, body),
            Err(e) => {
                let text = format!("berth metrics: {e}\n");
                result = Err(e);
                http_response("503 Service Unavailable", "text/plain", &text, body)
            }
        },
        Request::NotFound => http_response("404 Not Found", "text/plain", "not found\n", true),
        Request::MethodNotAllowed => http_response(
            "405 Method Not Allowed",
            "text/plain",
            "GET or HEAD only\n",
            true,
        ),
        Request::BadRequest => {
            http_response("400 Bad Request", "text/plain", "bad request\n", true)
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&answer)
        .and_then(|()| out.flush())
        .map_err(io("writing the HTTP answer"))?;
    result
}

/// Run journalctl with the right matches (replacing this process).
pub fn logs(name: &str, follow: bool) -> AdminError {
    use std::os::unix::process::CommandExt;
    let m = if name.ends_with(".scope") {
        container_matches(name, Some(name))
    } else if is_container_name(name) {
        container_matches(name, scope_of_id(name).as_deref())
    } else {
        service_matches(name)
    };
    let mut cmd = Command::new("journalctl");
    cmd.arg("--no-pager").args(&m);
    if follow {
        cmd.arg("--follow");
    }
    AdminError::Journalctl(cmd.exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5M");
        assert_eq!(bytes(u64::MAX), "-");
        assert_eq!(cpu(1_500_000_000), "1.50s");
        assert_eq!(duration_usec(75_000_000), "1m15s");
        assert_eq!(duration_usec(7_200_000_000), "2h00m");
    }

    #[test]
    fn names_pick_containers_or_services() {
        assert!(is_container_name("0123456789ab"));
        assert!(is_container_name("berth-web-0123456789ab.scope"));
        assert!(!is_container_name("web"));
        let u = "berth-web-0123456789ab.scope";
        assert_eq!(
            container_matches(u, Some(u)),
            vec![
                "_SYSTEMD_UNIT=berth-web-0123456789ab.scope".to_string(),
                "+".into(),
                "_SYSTEMD_UNIT=berth.service".into(),
                "BERTH_CONTAINER=0123456789ab".into(),
                "+".into(),
                "_SYSTEMD_SLICE=system-web.slice".into(),
                "BERTH_CONTAINER=0123456789ab".into(),
            ]
        );
        assert_eq!(
            container_matches("0123456789ab", None),
            vec![
                "_SYSTEMD_UNIT=berth.service".to_string(),
                "BERTH_CONTAINER=0123456789ab".into(),
            ]
        );
    }

    #[test]
    fn service_logs_match_only_unforgeable_fields() {
        let m = service_matches("web-app");
        // Nothing an application can write itself selects entries.
        assert!(m.iter().all(|f| !f.starts_with("SYSLOG_IDENTIFIER=")));
        assert_eq!(
            m,
            vec![
                "_SYSTEMD_SLICE=berth-web-app.slice".to_string(),
                "+".into(),
                "_SYSTEMD_UNIT=berth.service".into(),
                "BERTH_SERVICE=web-app".into(),
                "+".into(),
                "_SYSTEMD_SLICE=system-web\\x2dapp.slice".into(),
                "BERTH_SERVICE=web-app".into(),
            ]
        );
    }
}
