//! What runs now: the supervisor's table of containers, kept current by the
//! serving loops, read by STATUS= and the D-Bus interface.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a container is in its life. On D-Bus and in JSON a lowercase string
/// ("warm", "running"), as before the enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, zbus::Type)]
#[serde(rename_all = "lowercase")]
#[zvariant(signature = "s")]
pub enum ContainerState {
    /// Prepared ahead (namespaces, tree, scope), waiting for a connection.
    Warm,
    /// Its application runs.
    Running,
    /// Idle past `freeze_after`: held by the cgroup freezer (or SIGSTOP
    /// without a scope) until the next connection thaws it.
    Frozen,
}

impl ContainerState {
    /// Whether its application was started (running or frozen).
    pub fn started(self) -> bool {
        matches!(self, ContainerState::Running | ContainerState::Frozen)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Warm => "warm",
            ContainerState::Running => "running",
            ContainerState::Frozen => "frozen",
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One container as `berth list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, zbus::Type)]
pub struct ContainerInfo {
    pub id: String,
    pub service: String,
    /// The scope, or "" without one.
    pub unit: String,
    /// Host pid of the container's PID 1 (0 while warm).
    pub pid: u32,
    pub state: ContainerState,
    /// Microseconds since the epoch.
    pub started_usec: u64,
    pub connections: u32,
    /// When the idle timer ends it, microseconds since the epoch (0: none).
    pub idle_deadline_usec: u64,
    pub peer: String,
    /// The service definition it was built from ([`generation`]).
    pub generation: String,
}

pub fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn usec_after(d: Duration) -> u64 {
    now_usec().saturating_add(d.as_micros() as u64)
}

/// A service's failed-start throttling as `berth status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, zbus::Type)]
pub struct ServiceInfo {
    pub name: String,
    /// Failed starts in a row.
    pub failures: u32,
    /// No new container before this (µs since the epoch; 0: not throttled).
    pub throttled_until_usec: u64,
    /// The definition new containers are built from ([`generation`]).
    pub generation: String,
}

/// A short name for one service definition: 8 hex digits of an FNV-1a hash
/// of every validated setting but `warm` (the pool's size changes no
/// container), so two containers show whether they run the same
/// definition. Not a security boundary, only a label.
pub fn generation(svc: &crate::config::Service) -> String {
    let mut svc = svc.clone();
    svc.warm = 0;
    let text = format!("{svc:?}");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (h >> 32) ^ (h & 0xffff_ffff))
}

#[derive(Default)]
pub struct Registry {
    map: Mutex<BTreeMap<String, ContainerInfo>>,
    services: Mutex<BTreeMap<String, ServiceInfo>>,
    /// Counters for `berth metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Memory and CPU over each container's life (`berth status`).
    pub history: super::history::History,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ContainerInfo>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn services(&self) -> Vec<ServiceInfo> {
        self.services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn set_service(&self, info: ServiceInfo) {
        self.services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.name.clone(), info);
    }

    pub fn list(&self) -> Vec<ContainerInfo> {
        self.lock().values().cloned().collect()
    }

    /// Containers with an application, frozen or not (warm ones are not
    /// running anything yet).
    pub fn running(&self) -> usize {
        self.lock().values().filter(|c| c.state.started()).count()
    }

    pub fn insert(&self, info: ContainerInfo) {
        self.lock().insert(info.id.clone(), info);
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut ContainerInfo)) {
        if let Some(c) = self.lock().get_mut(id) {
            f(c);
        }
    }

    /// Register a running container for as long as the guard lives.
    pub fn register(self: &Arc<Self>, info: ContainerInfo) -> Registered {
        let id = info.id.clone();
        self.insert(info);
        Registered {
            registry: self.clone(),
            id,
        }
    }
}

pub struct Registered {
    registry: Arc<Registry>,
    id: String,
}

impl Registered {
    pub fn update(&self, f: impl FnOnce(&mut ContainerInfo)) {
        self.registry.update(&self.id, f);
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Type;

    /// The enum keeps the wire format of the former `state: String`.
    #[test]
    fn state_is_a_string_on_dbus_and_in_json() {
        assert_eq!(ContainerState::SIGNATURE.to_string(), "s");
        assert_eq!(ContainerInfo::SIGNATURE.to_string(), "(sssustutss)");
        assert_eq!(
            serde_json::to_string(&ContainerState::Warm).unwrap(),
            "\"warm\""
        );
        assert_eq!(
            serde_json::to_string(&ContainerState::Running).unwrap(),
            "\"running\""
        );
        assert_eq!(
            serde_json::to_string(&ContainerState::Frozen).unwrap(),
            "\"frozen\""
        );
        assert_eq!(ContainerState::Frozen.to_string(), "frozen");
    }
}
