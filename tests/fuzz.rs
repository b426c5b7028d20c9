//! Fuzzing with a fixed budget inside `cargo test` (proptest): the
//! configuration parser on arbitrary and on mutated valid files, and the
//! stage protocol decoder on arbitrary datagrams. Neither may panic; the
//! parser answers with a service or with errors that each name the file
//! (and, inside it, line and column).

mod common;

use std::os::fd::AsRawFd;
use std::path::Path;

use proptest::prelude::*;

use common::config::accepted_keys;

use berth::sandbox::proto::{self, FromStage, FromZygote, ToStage, ToZygote};

/// Cases per property: a few seconds in a debug build in all.
const CASES: u32 = 300;

/// Every key of the SPEC's example, with values that need no host paths.
const VALID: &str = r#"mode = "inetd"
exec = ["/usr/sbin/dropbear", "-i", "-R", "-E"]
user = "root"
group = ""
environment = { LANG = "C.UTF-8" }
working_directory = "/"
hostname = "ssh"
idle_timeout = "5min"
max_lifetime = "1h"
max_connections = 64
max_connections_per_source = 8
rate_limit_per_source = "20/10s"
source_prefix_v6 = 64
warm = 2

[sandbox]
network = "none"
read_only = ["/usr"]
propagation = "private"
tmp_size = "64M"
etc = ["passwd", "group"]
capabilities = ["net_bind_service"]
seccomp = "default"
syslog = true

[resources]
memory_max = "256M"
memory_high = "200M"
cpu_weight = 100
cpu_quota = "50%"
tasks_max = 64
io_weight = 100
"#;

/// Loads `text` as a service file and as a berth.toml; panics only if the
/// answer breaks the contract (a panic inside berth fails the test too).
fn check_config(dir: &Path, text: &[u8]) {
    let file = dir.join("svc.toml");
    std::fs::write(&file, text).expect("write");
    match berth::config::load_service_all(&file, None) {
        Ok(service) => assert_eq!(service.name, "svc"),
        Err(errors) => {
            assert!(!errors.is_empty(), "Err without an error");
            for e in &errors {
                assert_eq!(e.location().file, file, "error about another file: {e}");
                let line = e.to_string();
                assert!(
                    line.starts_with(&format!("{}", file.display())),
                    "error without its location: {line}"
                );
                assert!(!line.contains('\n'), "an error is one line: {line:?}");
                if let Some((l, c)) = e.location().position {
                    let lines = text.split(|&b| b == b'\n').count();
                    assert!(l >= 1 && c >= 1 && l <= lines, "{line}: beyond the text");
                }
            }
        }
    }
    let defaults = dir.join("berth.toml");
    std::fs::write(&defaults, text).expect("write");
    if let Err(e) = berth::config::load_defaults(&defaults) {
        assert_eq!(e.location().file, defaults, "{e}");
    }
}

/// A change to a valid file: what fuzzers do to find the edges of a parser.
#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Replace { at: usize, byte: u8 },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that mean something to TOML, and some that do not.
    let special = prop::sample::select(
        b"=\"'[]{},.#\n\r\t \\-+0123456789_:/%eExXoObBinfa\0\xff\xc3".to_vec(),
    );
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (
            any::<usize>(),
            prop::collection::vec(prop_oneof![special.clone(), any::<u8>()], 1..8)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), special).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

fn apply(text: &mut Vec<u8>, m: &Mutation) {
    let n = text.len();
    match m {
        Mutation::Delete { at, len } if n > 0 => {
            let at = at % n;
            let end = (at + len).min(n);
            text.drain(at..end);
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (n + 1);
            text.splice(at..at, bytes.iter().copied());
        }
        Mutation::Replace { at, byte } if n > 0 => text[at % n] = *byte,
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let i = line % lines.len();
            let copy = lines[i].clone();
            lines.insert(i, copy);
            *text = lines.join(&b'\n');
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let len = lines.len();
            lines.swap(a % len, b % len);
            *text = lines.join(&b'\n');
        }
        _ => {}
    }
}

/// Every key berth accepts (read from src/config/validate.rs, so a new key
/// is fuzzed as soon as it exists), with its table: `"[sandbox]\nnetwork"`.
fn keys() -> Vec<String> {
    accepted_keys()
        .into_iter()
        .flat_map(|(table, keys)| {
            keys.into_iter().map(move |k| match table.as_str() {
                "TOP" => k,
                t => format!("[{}]\n{k}", t.to_lowercase()),
            })
        })
        .collect()
}

/// A TOML value of any type, with the strings berth's values look like.
fn toml_value() -> impl Strategy<Value = String> {
    let word = r#"[a-zA-Z0-9/:%._ -]{0,12}|[0-9]{1,22}(ms|s|min|h|d|K|M|G|T|B|%)?|[0-9]{1,12}/[0-9]{0,12}[a-z]{0,3}|/[a-z/.]{0,12}:/[a-z/.]{0,12}"#;
    let string = word.prop_map(|w| format!("{w:?}"));
    prop_oneof![
        string.clone(),
        any::<i64>().prop_map(|i| i.to_string()),
        "[0-9]{20,30}",
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        prop::collection::vec(string.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        prop::collection::vec((r"[A-Za-z_]{1,8}", string), 0..3).prop_map(|v| {
            let items: Vec<String> = v.iter().map(|(k, w)| format!("{k} = {w}")).collect();
            format!("{{ {} }}", items.join(", "))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_takes_arbitrary_text(text in ".{0,300}") {
        let dir = tempfile::tempdir().unwrap();
        check_config(dir.path(), text.as_bytes());
    }

    #[test]
    fn config_parser_takes_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        check_config(dir.path(), &bytes);
    }

    #[test]
    fn config_parser_takes_toml_like_text(
        text in r#"([a-z_\[\]]{1,30}( ?= ?)("[^"\n]{0,20}"|[0-9]{1,25}|true|\[[^\n]{0,20}\]|\{[^\n]{0,20}\}|[0-9:T.-]{1,20})?\n){0,12}"#
    ) {
        let dir = tempfile::tempdir().unwrap();
        check_config(dir.path(), text.as_bytes());
    }

    #[test]
    fn config_parser_takes_known_keys_with_any_value(
        lines in prop::collection::vec((prop::sample::select(keys()), toml_value()), 1..8)
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Each key once, top-level keys first, then each table once.
        let lines: std::collections::BTreeMap<_, _> = lines.into_iter().collect();
        let mut text = String::from("mode = \"inetd\"\nexec = [\"/bin/true\"]\n");
        let tables = std::iter::once(String::new()).chain(
            accepted_keys()
                .into_iter()
                .filter(|(t, _)| t != "TOP")
                .map(|(t, _)| format!("[{}]", t.to_lowercase())),
        );
        for table in tables {
            let mut header = !table.is_empty();
            for (k, v) in &lines {
                let (t, key) = k.rsplit_once('\n').unwrap_or(("", k.as_str()));
                if t != table || (t.is_empty() && (key == "mode" || key == "exec")) {
                    continue;
                }
                if std::mem::take(&mut header) {
                    text.push_str(&format!("{table}\n"));
                }
                text.push_str(&format!("{key} = {v}\n"));
            }
        }
        check_config(dir.path(), text.as_bytes());
    }

    #[test]
    fn config_parser_takes_mutated_valid_files(mutations in prop::collection::vec(mutation(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = VALID.as_bytes().to_vec();
        for m in &mutations {
            apply(&mut text, m);
        }
        check_config(dir.path(), &text);
    }

    #[test]
    fn stage_decoder_takes_arbitrary_datagrams(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            // Mutated valid messages get past the first byte of JSON.
            (prop::sample::select(vec![
                r#"{"Forked":{"pid":42}}"#,
                r#""Prepared""#,
                r#"{"Failed":{"message":"mount: EPERM"}}"#,
                r#"{"Start":{"listen_fds":2}}"#,
                r#""Fork""#,
                r#"{"Init":{"spec":{}}}"#,
                r#"{"Setup":{}}"#,
            ]), any::<usize>(), prop::collection::vec(any::<u8>(), 0..4))
                .prop_map(|(msg, at, junk)| {
                    let mut b = msg.as_bytes().to_vec();
                    let at = at % (b.len() + 1);
                    b.splice(at..at, junk);
                    b
                }),
            // Deep nesting: must be an error, never a stack overflow.
            (1..5000usize).prop_map(|n| "[".repeat(n).into_bytes()),
        ]
    ) {
        decode_all(&bytes);
    }
}

/// Sends `bytes` as one datagram and decodes it as every message type.
fn decode_all(bytes: &[u8]) {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, send, socketpair};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    for _ in 0..4 {
        send(a.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).expect("send");
    }
    let fd = b.as_raw_fd();
    let empty = bytes.is_empty();
    // An empty datagram reads as the end of the stream; anything else is a
    // message or a decode error.
    match proto::recv::<ToStage>(fd, MsgFlags::empty()) {
        Ok(None) => assert!(empty),
        Ok(Some(_)) | Err(proto::ProtoError::Decode(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
    let r = proto::recv::<FromStage>(fd, MsgFlags::empty());
    assert!(matches!(r, Ok(_) | Err(proto::ProtoError::Decode(_))));
    let r = proto::recv::<ToZygote>(fd, MsgFlags::empty());
    assert!(matches!(r, Ok(_) | Err(proto::ProtoError::Decode(_))));
    let r = proto::recv::<FromZygote>(fd, MsgFlags::empty());
    assert!(matches!(r, Ok(_) | Err(proto::ProtoError::Decode(_))));
}

#[test]
fn valid_file_of_the_fuzzer_is_valid() {
    // The mutations start from a file that loads, so they test the edges
    // of valid input rather than one early error.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.toml");
    std::fs::write(&file, VALID).unwrap();
    let s = berth::config::load_service(&file, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.rate_limit_per_source,
        Some(berth::config::RateLimit {
            count: 20,
            per: std::time::Duration::from_secs(10)
        })
    );
    assert_eq!(s.source_prefix_v6, 64);
}
