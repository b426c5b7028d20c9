//! `berth top`: berth's containers as a live table, redrawn in place like
//! `systemd-cgtop`; `-n 1` prints one table and exits (no terminal needed).
//! Also the sparklines `berth status` draws from the supervisor's samples.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::admin::{self, AdminError, Row, bytes, duration_usec};
use crate::supervisor::registry::now_usec;

/// What `--order` sorts by (largest first, names alphabetically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    Cpu,
    Memory,
    Tasks,
    Connections,
    Uptime,
    Name,
}

/// One container as a row of numbers, before formatting.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub service: String,
    pub state: String,
    /// Percent of one CPU since the last frame (`None`: not known yet).
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub tasks: Option<u64>,
    pub connections: Option<u32>,
    /// Microseconds left on the idle timer.
    pub idle_usec: Option<u64>,
    pub uptime_usec: Option<u64>,
}

/// Fixed columns after the name: title and width (right-aligned).
const COLUMNS: [(&str, usize); 8] = [
    ("SERVICE", 12),
    ("STATE", 7),
    ("CPU%", 6),
    ("MEMORY", 8),
    ("TASKS", 5),
    ("CONNS", 5),
    ("IDLE", 6),
    ("UPTIME", 6),
];
const MIN_NAME: usize = 8;

/// Cut `s` to `w` characters, marking the cut with "…".
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_owned();
    }
    if w == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(w - 1).collect();
    out.push('…');
    out
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The table, each line at most `width` characters: a summary line, the
/// header, one line per container in `order`. Columns that do not fit are
/// left out from the right; the name column takes what remains.
pub fn render(lines: &[Line], width: usize, order: Order) -> Vec<String> {
    let mut sorted: Vec<&Line> = lines.iter().collect();
    let key = |l: &Line| -> f64 {
        match order {
            Order::Cpu => l.cpu.unwrap_or(-1.0),
            Order::Memory => l.memory.map_or(-1.0, |v| v as f64),
            Order::Tasks => l.tasks.map_or(-1.0, |v| v as f64),
            Order::Connections => l.connections.map_or(-1.0, f64::from),
            Order::Uptime => l.uptime_usec.map_or(-1.0, |v| v as f64),
            Order::Name => 0.0,
        }
    };
    sorted.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.name.cmp(&b.name))
    });
    // As many fixed columns as fit beside a minimal name column.
    let mut shown = COLUMNS.len();
    while shown > 0 && MIN_NAME + COLUMNS[..shown].iter().map(|(_, w)| w + 1).sum::<usize>() > width
    {
        shown -= 1;
    }
    let fixed: usize = COLUMNS[..shown].iter().map(|(_, w)| w + 1).sum();
    let name_w = width.saturating_sub(fixed).max(1);
    let row = |name: &str, cells: &[String]| -> String {
        let mut s = format!("{:<name_w$}", fit(name, name_w));
        for ((_, w), c) in COLUMNS[..shown].iter().zip(cells) {
            s.push(' ');
            s.push_str(&format!("{:>w$}", fit(c, *w)));
        }
        fit(s.trim_end(), width)
    };
    let cpus: Vec<f64> = lines.iter().filter_map(|l| l.cpu).collect();
    let total_cpu = if cpus.is_empty() {
        "-".to_owned()
    } else {
        format!("{:.1}%", cpus.iter().fold(0.0, |a, b| a + b))
    };
    let total_mem: u64 = lines.iter().filter_map(|l| l.memory).sum();
    let mut out = vec![fit(
        &format!(
            "berth: {} containers, CPU {total_cpu}, memory {}",
            lines.len(),
            bytes(total_mem)
        ),
        width,
    )];
    let titles: Vec<String> = COLUMNS.iter().map(|(t, _)| t.to_string()).collect();
    out.push(row("CONTAINER", &titles));
    for l in sorted {
        let cells = [
            l.service.clone(),
            l.state.clone(),
            opt(l.cpu, |c| format!("{c:.1}")),
            opt(l.memory, bytes),
            opt(l.tasks, |t| t.to_string()),
            opt(l.connections, |c| c.to_string()),
            opt(l.idle_usec, duration_usec),
            opt(l.uptime_usec, duration_usec),
        ];
        out.push(row(&l.name, &cells));
    }
    out
}

/// Eight levels, lowest to highest.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` as one bar each, scaled to their maximum, at most `width`
/// bars (the newest; older ones are merged in pairs until they fit).
pub fn sparkline(values: &[u64], width: usize) -> String {
    let mut v: Vec<u64> = values.to_vec();
    while v.len() > width.max(1) {
        v = v
            .chunks(2)
            .map(|c| c.iter().sum::<u64>() / c.len() as u64)
            .collect();
    }
    let max = v.iter().copied().max().unwrap_or(0);
    v.iter()
        .map(|x| {
            if max == 0 {
                BARS[0]
            } else {
                BARS[((*x as u128 * 7 + max as u128 / 2) / max as u128).min(7) as usize]
            }
        })
        .collect()
}

/// The terminal's width: `--width`, then $COLUMNS, then the terminal, then 80.
pub fn width(flag: Option<usize>) -> usize {
    if let Some(w) = flag {
        return w.max(1);
    }
    if let Some(w) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|w| *w > 0)
    {
        return w;
    }
    let stdout = std::io::stdout();
    if stdout.is_terminal()
        && let Ok(ws) = rustix::termios::tcgetwinsize(&stdout)
        && ws.ws_col > 0
    {
        return usize::from(ws.ws_col);
    }
    80
}

fn line_of(r: &Row, cpu: Option<f64>, now: u64) -> Line {
    let i = &r.info;
    let st = r.stats.as_ref();
    let known = |v: u64| (v != u64::MAX).then_some(v);
    Line {
        name: if i.unit.is_empty() {
            i.id.clone()
        } else {
            i.unit.clone()
        },
        service: i.service.clone(),
        state: i.state.to_string(),
        cpu,
        memory: st.and_then(|s| known(s.memory_current)),
        tasks: st.and_then(|s| known(s.tasks_current)),
        connections: Some(i.connections),
        idle_usec: (i.idle_deadline_usec != 0).then(|| i.idle_deadline_usec.saturating_sub(now)),
        uptime_usec: (i.started_usec != 0 && i.started_usec != u64::MAX)
            .then(|| now.saturating_sub(i.started_usec)),
    }
}

/// CPU counters by container, with the time they were read.
type CpuSeen = std::collections::HashMap<String, (u64, std::time::Instant)>;

fn cpu_percent(r: &Row, seen: &CpuSeen, now: std::time::Instant) -> Option<f64> {
    let ns = r.stats.as_ref().map(|s| s.cpu_usage_nsec)?;
    if ns == u64::MAX {
        return None;
    }
    let (before, at) = seen.get(&r.info.id)?;
    let wall = now.duration_since(*at).as_nanos();
    (wall > 0 && ns >= *before).then(|| (ns - before) as f64 * 100.0 / wall as f64)
}

/// `berth top`: `iterations` frames (`None`: until interrupted), `delay`
/// apart. On a terminal each frame replaces the last; otherwise frames
/// follow each other, as `systemd-cgtop --batch` does.
pub fn run(
    iterations: Option<u64>,
    delay: Duration,
    order: Order,
    width_flag: Option<usize>,
) -> Result<(), AdminError> {
    let rt = admin::runtime();
    let tty = std::io::stdout().is_terminal();
    let mut seen = CpuSeen::new();
    // A first reading, so the first frame can show CPU rates.
    let (first, _) = rt.block_on(admin::rows())?;
    let t0 = std::time::Instant::now();
    for r in &first {
        if let Some(s) = &r.stats {
            seen.insert(r.info.id.clone(), (s.cpu_usage_nsec, t0));
        }
    }
    let mut n = 0u64;
    loop {
        std::thread::sleep(delay);
        let (rows, live) = rt.block_on(admin::rows())?;
        let at = std::time::Instant::now();
        let now = now_usec();
        let lines: Vec<Line> = rows
            .iter()
            .map(|r| line_of(r, cpu_percent(r, &seen, at), now))
            .collect();
        seen.clear();
        for r in &rows {
            if let Some(s) = &r.stats {
                seen.insert(r.info.id.clone(), (s.cpu_usage_nsec, at));
            }
        }
        let w = width(width_flag);
        let mut text = String::new();
        if tty {
            // Home and clear: the new frame replaces the old one.
            text.push_str("\x1b[H\x1b[2J");
        }
        for l in render(&lines, w, order) {
            text.push_str(&l);
            text.push('\n');
        }
        if !live {
            text.push_str(&fit("(berth serve is not running: systemd's view only)", w));
            text.push('\n');
        }
        if !tty {
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        // A closed pipe (`berth top | head`) ends top quietly.
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
        n += 1;
        if iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, cpu: f64, mem: u64) -> Line {
        Line {
            name: name.into(),
            service: "web".into(),
            state: "running".into(),
            cpu: Some(cpu),
            memory: Some(mem),
            tasks: Some(3),
            connections: Some(1),
            idle_usec: None,
            uptime_usec: Some(61_000_000),
        }
    }

    #[test]
    fn every_line_fits_the_width() {
        let long = "berth-a-very-long-service-name-0123456789ab.scope";
        let lines = vec![line(long, 12.5, 5 << 20), line("b", 0.0, 1 << 30)];
        for w in [20, 40, 60, 80, 100, 200] {
            let out = render(&lines, w, Order::Cpu);
            assert_eq!(out.len(), 4, "summary, header, two rows");
            for l in &out {
                assert!(l.chars().count() <= w, "{w}: {l:?}");
            }
            assert!(out[1].starts_with("CONTAINER"), "{out:?}");
        }
        // Wide: every column, values right-aligned under their titles.
        let out = render(&lines, 120, Order::Cpu);
        for (t, _) in COLUMNS {
            assert!(out[1].contains(t), "{t} in {:?}", out[1]);
        }
        assert!(out[2].contains(long), "{out:?}");
        assert!(
            out[2].contains("12.5") && out[2].contains("5.0M"),
            "{out:?}"
        );
        // Narrow: the name is cut with a mark, the right columns dropped.
        let out = render(&lines, 40, Order::Cpu);
        assert!(out[2].contains('…'), "{out:?}");
        assert!(!out[1].contains("UPTIME"), "{out:?}");
    }

    #[test]
    fn order_sorts_largest_first() {
        let lines = vec![
            line("a", 1.0, 300),
            line("b", 50.0, 100),
            line("c", 5.0, 200),
        ];
        let names = |o| -> Vec<String> {
            render(&lines, 100, o)[2..]
                .iter()
                .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
                .collect()
        };
        assert_eq!(names(Order::Cpu), ["b", "c", "a"]);
        assert_eq!(names(Order::Memory), ["a", "c", "b"]);
        assert_eq!(names(Order::Name), ["a", "b", "c"]);
    }

    #[test]
    fn sparkline_scales_and_stays_narrow() {
        assert_eq!(sparkline(&[0, 4, 8], 10), "▁▅█");
        assert_eq!(sparkline(&[0, 0], 10), "▁▁");
        assert_eq!(sparkline(&[], 10), "");
        let long: Vec<u64> = (0..1000).collect();
        let s = sparkline(&long, 30);
        assert!(s.chars().count() <= 30 && s.chars().count() >= 15, "{s}");
        assert!(s.ends_with('█') && s.starts_with('▁'), "{s}");
    }
}
