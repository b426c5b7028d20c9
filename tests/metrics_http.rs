//! `berth metrics --http`: one HTTP request on stdin, the answer on stdout
//! (as an `Accept=yes` socket hands it the connection).

use std::io::Write;
use std::process::{Command, Stdio};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn ask(request: &str) -> (i32, String) {
    let mut child = Command::new(BERTH)
        .args(["metrics", "--http"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run berth metrics --http");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write the request");
    let out = child.wait_with_output().expect("wait for berth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let (code, out) = ask("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
    let (code, out) = ask("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
    let (_, out) = ask("garbage\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
}

#[test]
fn metrics_answer_is_openmetrics_or_says_why_not() {
    let (code, out) = ask("GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n");
    let (head, body) = out.split_once("\r\n\r\n").expect("a header and a body");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .expect("Content-Length");
    assert_eq!(length, body.len(), "{out}");
    if head.starts_with("HTTP/1.1 200 OK") {
        // A host with systemd: the exposition, whole.
        assert_eq!(code, 0);
        assert!(
            head.contains(
                "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            )
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    } else {
        // No system bus here: the client hears why, and berth exits 1.
        assert!(head.starts_with("HTTP/1.1 503 "), "{out}");
        assert_eq!(code, 1);
        assert!(body.starts_with("berth metrics: "), "{body}");
    }
}
