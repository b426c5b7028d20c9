//! Per-source limits of inetd mode: who a connection counts against
//! (`source_prefix_v6`), the token buckets of `rate_limit_per_source`, and
//! the refusal log that says once per source and interval why connections
//! were closed. Every map here is bounded ([`MAX_TRACKED_SOURCES`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Sources tracked at most per service, by the rate limiter and by the
/// refusal log each. An entry costs under 100 bytes, so this is a few MiB
/// at most. Policy when full: entries that no longer matter (a bucket that
/// has refilled, a refusal logged over an interval ago) are dropped; if
/// every entry still matters, the new source is not tracked: its connection
/// is admitted by the rate limiter (it still counts against
/// `max_connections`), and its refusals are logged under one shared entry.
/// Failing open keeps a distributed flood (which has as many sources as it
/// wants) from locking out sources that were never seen.
pub const MAX_TRACKED_SOURCES: usize = 16_384;

/// How often a full map is swept at most: a sweep is linear in its size.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Refusals other than the rate limit's are logged at most once per source
/// and this interval (the rate limit's own refusals: once per its interval).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Who a connection counts against for the per-source limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address, or an IPv6 address counted alone (prefix 128).
    Ip(IpAddr),
    /// An IPv6 network of `source_prefix_v6` bits (host bits zero).
    Net6(Ipv6Addr, u8),
    Uid(u32),
    Unknown,
}

impl Source {
    /// The key the limits count this peer under: IPv4 per address, IPv6
    /// per `/prefix_v6` (1..=128; out-of-range values are clamped), so one
    /// host with a /64 cannot pose as many sources.
    pub fn keyed(self, prefix_v6: u8) -> Source {
        match self {
            Source::Ip(IpAddr::V6(ip)) => {
                let prefix = prefix_v6.clamp(1, 128);
                if prefix == 128 {
                    return Source::Ip(IpAddr::V6(ip));
                }
                let mask = u128::MAX << (128 - u32::from(prefix));
                Source::Net6(Ipv6Addr::from(u128::from(ip) & mask), prefix)
            }
            other => other,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ip(ip) => write!(f, "{ip}"),
            Source::Net6(net, prefix) => write!(f, "{net}/{prefix}"),
            Source::Uid(u) => write!(f, "uid {u}"),
            Source::Unknown => write!(f, "unknown peer"),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The token buckets of `rate_limit_per_source`: each source may open
/// `count` connections at once and gets `count` more per `per`, evenly.
/// A source whose bucket is full again is forgotten.
#[derive(Default)]
pub struct Buckets {
    map: HashMap<Source, Bucket>,
    swept_at: Option<Instant>,
}

impl Buckets {
    /// Takes a token for a connection from `source`; false: over the limit.
    pub fn admit(&mut self, source: &Source, limit: RateLimit, now: Instant) -> bool {
        let capacity = f64::from(limit.count);
        let rate = capacity / limit.per.as_secs_f64();
        if let Some(b) = self.map.get_mut(source) {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(capacity);
            b.at = now;
            if b.tokens < 1.0 {
                return false;
            }
            b.tokens -= 1.0;
            return true;
        }
        if self.map.len() >= MAX_TRACKED_SOURCES {
            self.sweep(limit, now);
            if self.map.len() >= MAX_TRACKED_SOURCES {
                // Untracked (see MAX_TRACKED_SOURCES): admitted.
                return true;
            }
        }
        self.map.insert(
            source.clone(),
            Bucket {
                tokens: capacity - 1.0,
                at: now,
            },
        );
        true
    }

    /// Drops the buckets that have refilled: they mean the same as none.
    fn sweep(&mut self, limit: RateLimit, now: Instant) {
        if self
            .swept_at
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.swept_at = Some(now);
        let capacity = f64::from(limit.count);
        let rate = capacity / limit.per.as_secs_f64();
        self.map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < capacity
        });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerSource,
    RateLimit,
}

impl Refusal {
    /// The `reason` field of the `refused` event: the key that refused it.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerSource => "max_connections_per_source",
            Refusal::RateLimit => "rate_limit_per_source",
        }
    }
}

struct Logged {
    at: Instant,
    /// Refusals since `at` that were not logged.
    quiet: u64,
}

/// Which refusals to log: the first per source, reason and interval; the
/// next entry after the interval says how many went unlogged meanwhile.
#[derive(Default)]
pub struct RefusalLog {
    map: HashMap<(Option<Source>, Refusal), Logged>,
    swept_at: Option<Instant>,
}

impl RefusalLog {
    /// `Some(n)`: log this refusal, `n` others went unlogged since the last
    /// entry. `None`: stay quiet, one was logged less than `interval` ago.
    pub fn should_log(
        &mut self,
        source: &Source,
        why: Refusal,
        interval: Duration,
        now: Instant,
    ) -> Option<u64> {
        let mut key = (Some(source.clone()), why);
        if !self.map.contains_key(&key) && self.map.len() >= MAX_TRACKED_SOURCES {
            self.sweep(now);
            if self.map.len() >= MAX_TRACKED_SOURCES {
                // One shared entry for the sources that do not fit.
                key = (None, why);
            }
        }
        match self.map.get_mut(&key) {
            Some(l) if now.saturating_duration_since(l.at) < interval => {
                l.quiet = l.quiet.saturating_add(1);
                None
            }
            Some(l) => {
                let quiet = l.quiet;
                *l = Logged { at: now, quiet: 0 };
                Some(quiet)
            }
            None => {
                self.map.insert(key, Logged { at: now, quiet: 0 });
                Some(0)
            }
        }
    }

    /// Drops entries older than [`REFUSAL_LOG_INTERVAL`]. Only a full map
    /// is swept, so only then may a source under a longer rate-limit
    /// interval be logged again before that interval is over.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.swept_at = Some(now);
        self.map
            .retain(|_, l| now.saturating_duration_since(l.at) < REFUSAL_LOG_INTERVAL);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:?}", self.count, self.per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Source {
        Source::Ip(IpAddr::V6(s.parse().unwrap()))
    }

    #[test]
    fn ipv6_counts_per_prefix_ipv4_per_address() {
        let a = v6("2001:db8:1:2:aaaa::1").keyed(64);
        let b = v6("2001:db8:1:2:ffff:ffff:ffff:ffff").keyed(64);
        let other = v6("2001:db8:1:3::1").keyed(64);
        assert_eq!(a, b, "one /64 is one source");
        assert_ne!(a, other);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            v6("2001:db8:1:2:aaaa::1").keyed(48),
            v6("2001:db8:1:ffff::1").keyed(48)
        );
        assert_ne!(
            v6("2001:db8:1:2::1").keyed(128),
            v6("2001:db8:1:2::2").keyed(128)
        );
        assert_eq!(v6("::1").keyed(128).to_string(), "::1");
        assert_eq!(v6("8000::1").keyed(1), v6("ffff::").keyed(1));
        assert_ne!(v6("8000::1").keyed(1), v6("7fff::").keyed(1));
        // Out of range is clamped, never a shift overflow.
        assert_eq!(v6("8000::1").keyed(0), v6("8000::1").keyed(1));
        assert_eq!(v6("::1").keyed(200), v6("::1").keyed(128));
        let v4 = Source::Ip("10.0.0.1".parse().unwrap());
        assert_eq!(v4.clone().keyed(1), v4);
        assert_ne!(
            Source::Ip("10.0.0.2".parse().unwrap()).keyed(1),
            v4.keyed(1)
        );
        assert_eq!(Source::Uid(7).keyed(64), Source::Uid(7));
    }

    const LIMIT: RateLimit = RateLimit {
        count: 3,
        per: Duration::from_secs(3),
    };

    #[test]
    fn bucket_holds_the_rate_and_refills() {
        let mut b = Buckets::default();
        let s = Source::Uid(1);
        let t0 = Instant::now();
        assert!(b.admit(&s, LIMIT, t0));
        assert!(b.admit(&s, LIMIT, t0));
        assert!(b.admit(&s, LIMIT, t0));
        assert!(!b.admit(&s, LIMIT, t0), "burst of count, then refused");
        assert!(!b.admit(&s, LIMIT, t0 + Duration::from_millis(900)));
        assert!(b.admit(&s, LIMIT, t0 + Duration::from_millis(1100)));
        assert!(!b.admit(&s, LIMIT, t0 + Duration::from_millis(1200)));
        assert!(
            b.admit(&Source::Uid(2), LIMIT, t0),
            "other sources unaffected"
        );
        // Refill caps at count.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.admit(&s, LIMIT, later));
        }
        assert!(!b.admit(&s, LIMIT, later));
    }

    #[test]
    fn buckets_stay_bounded() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        let n = MAX_TRACKED_SOURCES as u32 + 1000;
        for u in 0..n {
            b.admit(&Source::Uid(u), LIMIT, t0);
        }
        assert_eq!(b.len(), MAX_TRACKED_SOURCES, "full: new sources untracked");
        // Once the buckets have refilled, they are dropped for new ones.
        let later = t0 + Duration::from_secs(10);
        assert!(b.admit(&Source::Uid(n + 1), LIMIT, later));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn refusals_are_logged_once_per_source_and_interval() {
        let mut log = RefusalLog::default();
        let s = Source::Uid(1);
        let i = Duration::from_secs(10);
        let t0 = Instant::now();
        let why = Refusal::RateLimit;
        assert_eq!(log.should_log(&s, why, i, t0), Some(0));
        for k in 1..1000 {
            assert_eq!(
                log.should_log(&s, why, i, t0 + Duration::from_millis(k)),
                None
            );
        }
        assert_eq!(
            log.should_log(&Source::Uid(2), why, i, t0),
            Some(0),
            "per source"
        );
        assert_eq!(
            log.should_log(&s, Refusal::MaxConnections, i, t0),
            Some(0),
            "per reason"
        );
        assert_eq!(log.should_log(&s, why, i, t0 + i), Some(999));
        assert_eq!(log.should_log(&s, why, i, t0 + i), None);
    }

    #[test]
    fn refusal_log_stays_bounded() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let i = REFUSAL_LOG_INTERVAL;
        let n = MAX_TRACKED_SOURCES as u32;
        for u in 0..n {
            assert!(
                log.should_log(&Source::Uid(u), Refusal::RateLimit, i, t0)
                    .is_some()
            );
        }
        // Full: further sources share one entry, logged once per interval.
        let extra: Vec<_> = (n..n + 100)
            .map(|u| log.should_log(&Source::Uid(u), Refusal::RateLimit, i, t0))
            .collect();
        assert_eq!(extra.iter().filter(|x| x.is_some()).count(), 1);
        assert_eq!(log.len(), MAX_TRACKED_SOURCES + 1);
        let later = t0 + i;
        assert!(
            log.should_log(&Source::Uid(0), Refusal::RateLimit, i, later)
                .is_some()
        );
        assert!(
            log.should_log(&Source::Uid(n + 500), Refusal::RateLimit, i, later)
                .is_some()
        );
        assert!(log.len() <= 3, "old entries swept: {}", log.len());
    }
}
