//! Memory and CPU of each container over its life, for the sparklines of
//! `berth status`: sampled by the supervisor from the scope's accounting,
//! kept in a fixed number of points per container. When the points run
//! out, neighbours are merged and each point stands for twice the time, so
//! a container's whole life fits in the same memory however long it runs.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often the supervisor samples each running container.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Points kept per container (each a `u64` and a `u32`).
pub const POINTS: usize = 64;

/// One container's history as `berth status` gets it over D-Bus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, zbus::Type)]
pub struct Samples {
    /// Milliseconds each point stands for.
    pub every_ms: u64,
    /// Bytes (memory.current), oldest first.
    pub memory: Vec<u64>,
    /// CPU use in per mille of one CPU, oldest first; `u32::MAX` where
    /// systemd does not account CPU for the scope.
    pub cpu_permille: Vec<u32>,
}

#[derive(Debug, Default)]
struct Series {
    memory: Vec<u64>,
    cpu: Vec<u32>,
    /// Raw samples per point.
    stride: u32,
    /// Raw samples summed for the point being filled.
    acc_mem: u64,
    acc_cpu: u64,
    /// Samples in `acc_cpu` (those with a known rate).
    acc_cpu_n: u32,
    acc_n: u32,
    /// The last CPU counter and when it was read, for the rate.
    last_cpu: Option<(u64, Instant)>,
}

impl Series {
    /// `lived`: how long the container has run, for the CPU rate of the
    /// first sample (its counter started at zero then).
    fn push(&mut self, memory: u64, cpu_nsec: u64, at: Instant, lived: Option<Duration>) {
        if self.stride == 0 {
            self.stride = 1;
        }
        let permille = match self.last_cpu {
            _ if cpu_nsec == u64::MAX => UNKNOWN,
            Some((ns, t)) if at > t && cpu_nsec >= ns => {
                let wall = at.duration_since(t).as_nanos().max(1);
                ((u128::from(cpu_nsec - ns) * 1000) / wall).min(u128::from(u32::MAX)) as u32
            }
            None => match lived {
                Some(d) if !d.is_zero() => ((u128::from(cpu_nsec) * 1000) / d.as_nanos())
                    .min(u128::from(UNKNOWN - 1)) as u32,
                _ => UNKNOWN,
            },
            _ => 0,
        };
        self.last_cpu = Some((cpu_nsec, at));
        self.acc_mem = self.acc_mem.saturating_add(memory);
        if permille != UNKNOWN {
            self.acc_cpu = self.acc_cpu.saturating_add(u64::from(permille));
            self.acc_cpu_n += 1;
        }
        self.acc_n += 1;
        if self.acc_n < self.stride {
            return;
        }
        let n = u64::from(self.acc_n);
        self.memory.push(self.acc_mem / n);
        self.cpu.push(if self.acc_cpu_n == 0 {
            UNKNOWN
        } else {
            (self.acc_cpu / u64::from(self.acc_cpu_n)) as u32
        });
        self.acc_mem = 0;
        self.acc_cpu = 0;
        self.acc_cpu_n = 0;
        self.acc_n = 0;
        if self.memory.len() >= POINTS {
            self.memory = halve(&self.memory, |a, b| a / 2 + b / 2 + (a % 2 + b % 2) / 2);
            self.cpu = halve(&self.cpu, |a, b| {
                // Unknown only where both are.
                if a == UNKNOWN {
                    b
                } else if b == UNKNOWN {
                    a
                } else {
                    ((u64::from(a) + u64::from(b)) / 2) as u32
                }
            });
            self.stride = self.stride.saturating_mul(2);
        }
    }
}

/// A CPU point systemd had no number for (CPUAccounting off).
pub const UNKNOWN: u32 = u32::MAX;

/// Neighbours merged: half the points, each for twice the time.
fn halve<T: Copy>(v: &[T], merge: impl Fn(T, T) -> T) -> Vec<T> {
    v.chunks(2)
        .filter_map(|c| c.iter().copied().reduce(&merge))
        .collect()
}

/// Every running container's series, by container id.
#[derive(Default)]
pub struct History {
    map: Mutex<BTreeMap<String, Series>>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Series>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(
        &self,
        id: &str,
        memory: u64,
        cpu_nsec: u64,
        at: Instant,
        lived: Option<Duration>,
    ) {
        self.lock()
            .entry(id.to_owned())
            .or_default()
            .push(memory, cpu_nsec, at, lived);
    }

    /// Forget containers that are gone: the map holds only listed ones.
    pub fn retain(&self, alive: &dyn Fn(&str) -> bool) {
        self.lock().retain(|id, _| alive(id));
    }

    pub fn get(&self, id: &str) -> Samples {
        match self.lock().get(id) {
            Some(s) => Samples {
                every_ms: SAMPLE_EVERY.as_millis() as u64 * u64::from(s.stride.max(1)),
                memory: s.memory.clone(),
                cpu_permille: s.cpu.clone(),
            },
            None => Samples::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sample every running container with a scope until `shutdown`.
pub async fn sample(
    registry: std::sync::Arc<super::registry::Registry>,
    scopes: crate::scope::Scopes,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = super::stopping(&mut shutdown) => return,
        }
        let list = registry.list();
        for c in &list {
            if c.state != super::registry::ContainerState::Running || c.unit.is_empty() {
                continue;
            }
            if let Ok(st) = scopes.stats(&c.unit).await {
                let lived = (c.started_usec != 0).then(|| {
                    Duration::from_micros(
                        super::registry::now_usec().saturating_sub(c.started_usec),
                    )
                });
                registry.history.record(
                    &c.id,
                    st.memory_current,
                    st.cpu_usage_nsec,
                    Instant::now(),
                    lived,
                );
            }
        }
        registry
            .history
            .retain(&|id| list.iter().any(|c| c.id == id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_life_stays_within_the_points() {
        let h = History::default();
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            // 2 s apart, half a CPU: 1e9 ns per sample.
            h.record(
                "a",
                i,
                i * 1_000_000_000,
                t0 + Duration::from_secs(2 * i),
                None,
            );
        }
        let s = h.get("a");
        assert!(
            s.memory.len() < POINTS && !s.memory.is_empty(),
            "{}",
            s.memory.len()
        );
        assert_eq!(s.memory.len(), s.cpu_permille.len());
        // Each point now covers many samples, and says so.
        assert!(s.every_ms > 2000 * 1000, "{}", s.every_ms);
        assert!(
            s.cpu_permille.iter().all(|p| *p == 500),
            "{:?}",
            s.cpu_permille
        );
        // Oldest first: memory rose over the life.
        assert!(s.memory.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn unaccounted_cpu_stays_unknown() {
        let h = History::default();
        let t0 = Instant::now();
        for i in 0..200u64 {
            h.record("a", 1, u64::MAX, t0 + Duration::from_secs(2 * i), None);
        }
        let s = h.get("a");
        assert!(!s.cpu_permille.is_empty());
        assert!(s.cpu_permille.iter().all(|p| *p == UNKNOWN));
    }

    #[test]
    fn gone_containers_are_forgotten() {
        let h = History::default();
        let t0 = Instant::now();
        for id in ["a", "b", "c"] {
            h.record(id, 1, 1, t0, None);
        }
        h.retain(&|id| id == "b");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("a"), Samples::default());
    }

    #[test]
    fn a_counter_going_backwards_is_no_spike() {
        let h = History::default();
        let t0 = Instant::now();
        h.record("a", 1, 5_000_000_000, t0, None);
        h.record("a", 1, 1_000, t0 + Duration::from_secs(2), None);
        assert_eq!(h.get("a").cpu_permille, vec![UNKNOWN, 0]);
    }

    #[test]
    fn the_first_sample_is_a_point_with_the_rate_since_the_start() {
        let h = History::default();
        // 1 s of CPU over 4 s of life: 250 per mille, at once.
        h.record(
            "a",
            7,
            1_000_000_000,
            Instant::now(),
            Some(Duration::from_secs(4)),
        );
        let s = h.get("a");
        assert_eq!((s.memory, s.cpu_permille), (vec![7], vec![250]));
    }
}
