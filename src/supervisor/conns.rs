//! What a container is doing with its sockets, read from /proc: the
//! connections it holds that came from the service's listeners, and
//! whether anything waits in their accept queues. This is how listen mode
//! decides that a container is idle without proxying its traffic.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// What identifies connections accepted from one listener.
#[derive(Debug, Clone)]
pub enum ListenerKey {
    /// Local TCP port (v4 or v6).
    Tcp(u16),
    /// Unix socket path: accepted sockets carry the listener's path.
    Unix(PathBuf),
}

/// Host pids of a container's processes: `init` and its descendants.
pub fn process_tree(init: u32) -> Vec<u32> {
    let mut out = vec![init];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        i += 1;
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("children");
            if let Ok(s) = fs::read_to_string(path) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Whether every thread of `pid` is stopped (or the process is gone).
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        match fs::read_to_string(t.path().join("stat")) {
            // "tid (comm) S ...": the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_none_or(|c| matches!(c, 'T' | 't' | 'Z' | 'X')),
            Err(_) => true,
        }
    })
}

/// Read and write syscalls made so far by the processes of `pids`
/// (`/proc/PID/io`; read/write/writev/sendfile count, recv/send do not).
pub fn io_syscalls(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/io")).ok())
        .map(|io| {
            io.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    matches!(k, "syscr" | "syscw")
                        .then(|| v.trim().parse::<u64>().ok())
                        .flatten()
                })
                .sum::<u64>()
        })
        .sum()
}

/// Threads of `pids` asleep in accept(), with their voluntary context
/// switches. Such a thread switches once more for every connection it takes,
/// so a changed count (or a thread gone from accept) between two looks means
/// connections came, however briefly they lasted.
pub fn acceptors(pids: &[u32]) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(wchan) = fs::read_to_string(t.path().join("wchan")) else {
                continue;
            };
            // inet_csk_accept (TCP); unix stream accept waits for a packet.
            if !(wchan.contains("accept") || wchan.contains("wait_for_more_packets")) {
                continue;
            }
            let tid = t.file_name().to_string_lossy().parse::<u32>().unwrap_or(0);
            let switches = fs::read_to_string(t.path().join("status"))
                .ok()
                .and_then(|st| {
                    st.lines()
                        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(0);
            out.insert(tid, switches);
        }
    }
    out
}

/// Whether the acceptors show connections taken since `before`.
pub fn accepted_since(before: &BTreeMap<u32, u64>, now: &BTreeMap<u32, u64>) -> bool {
    before
        .iter()
        .any(|(tid, n)| now.get(tid).is_none_or(|m| m != n))
}

/// Socket inodes open in any of `pids`.
pub fn socket_inodes(pids: &[u32]) -> HashSet<u64> {
    let mut out = HashSet::new();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(ino) = t
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse().ok())
                {
                    out.insert(ino);
                }
            }
        }
    }
    out
}

/// Connections from `keys` held by the container whose PID 1 is `init`.
pub fn open_connections(init: u32, keys: &[ListenerKey]) -> usize {
    let inodes = socket_inodes(&process_tree(init));
    if inodes.is_empty() {
        return 0;
    }
    let ports: Vec<u16> = keys
        .iter()
        .filter_map(|k| match k {
            ListenerKey::Tcp(p) => Some(*p),
            _ => None,
        })
        .collect();
    let paths: Vec<String> = keys
        .iter()
        .filter_map(|k| match k {
            ListenerKey::Unix(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let mut n = 0;
    if !ports.is_empty() {
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(s) = fs::read_to_string(file) {
                n += count_tcp(&s, &ports, &inodes);
            }
        }
    }
    if !paths.is_empty()
        && let Ok(s) = fs::read_to_string("/proc/net/unix")
    {
        n += count_unix(&s, &paths, &inodes);
    }
    n
}

/// /proc/net/tcp: `sl local rem st ... uid timeout inode`; state 0A is LISTEN.
fn count_tcp(table: &str, ports: &[u16], inodes: &HashSet<u64>) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] == "0A" {
                return false;
            }
            let port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let ino = f[9].parse::<u64>().ok();
            matches!((port, ino), (Some(p), Some(i)) if ports.contains(&p) && inodes.contains(&i))
        })
        .count()
}

/// /proc/net/unix: `Num RefCount Protocol Flags Type St Inode Path`;
/// St 03 is connected.
fn count_unix(table: &str, paths: &[String], inodes: &HashSet<u64>) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || f[5] != "03" {
                return false;
            }
            let ino = f[6].parse::<u64>().ok();
            matches!(ino, Some(i) if inodes.contains(&i)) && paths.iter().any(|p| p == f[7])
        })
        .count()
}

/// Whether a connection waits in any of the listeners' accept queues.
pub fn pending(listeners: &[OwnedFd]) -> bool {
    let mut fds: Vec<PollFd> = listeners
        .iter()
        .map(|l| PollFd::new(std::os::fd::AsFd::as_fd(l), PollFlags::POLLIN))
        .collect();
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Whether the peer of connection `fd` has closed its side (FIN or reset
/// received). An application that exits non-zero after its client hung up
/// says nothing about the application: such exits are not failed starts.
pub fn peer_hung_up(fd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    // rustix, not nix: nix drops the POLLRDHUP bit from revents.
    let mut fds = [PollFd::new(fd, PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)
}

/// Seconds since data last moved on a TCP connection, from TCP_INFO;
/// `None` for non-TCP sockets.
pub fn tcp_idle_ms(fd: &OwnedFd) -> Option<u32> {
    // SAFETY: tcp_info is plain old data; zeroed is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    Some(info.tcpi_last_data_recv.min(info.tcpi_last_data_sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_counts_compare() {
        let a: BTreeMap<u32, u64> = [(10, 5), (11, 7)].into_iter().collect();
        assert!(!accepted_since(&a, &a.clone()));
        let more: BTreeMap<u32, u64> = [(10, 6), (11, 7)].into_iter().collect();
        assert!(accepted_since(&a, &more));
        let gone: BTreeMap<u32, u64> = [(11, 7)].into_iter().collect();
        assert!(
            accepted_since(&a, &gone),
            "a thread out of accept is handling something"
        );
        assert!(!accepted_since(&BTreeMap::new(), &a));
    }

    #[test]
    fn counts_tcp_connections_of_our_ports() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 200 1\n   2: 0100007F:1F91 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 300 1\n";
        let inodes: HashSet<u64> = [100, 200, 300].into_iter().collect();
        assert_eq!(count_tcp(table, &[0x1f90], &inodes), 1);
        assert_eq!(count_tcp(table, &[0x1f90, 0x1f91], &inodes), 2);
        let none: HashSet<u64> = HashSet::new();
        assert_eq!(count_tcp(table, &[0x1f90], &none), 0);
    }

    #[test]
    fn counts_unix_connections_of_our_paths() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n0000: 00000002 00000000 00010000 0001 01 10 /run/a.sock\n0000: 00000003 00000000 00000000 0001 03 11 /run/a.sock\n0000: 00000003 00000000 00000000 0001 03 12\n";
        let inodes: HashSet<u64> = [10, 11, 12].into_iter().collect();
        assert_eq!(count_unix(table, &["/run/a.sock".into()], &inodes), 1);
    }
}
