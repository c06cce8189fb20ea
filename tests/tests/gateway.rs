//! The HTTP gateway at its edges, as a production HTTP server is probed: raw
//! bytes over TCP to the real runner in front of the real API function.
//! Malformed or oversized requests get CloudStack's error envelope (HTTP 400,
//! errorcode 400, never 431); silent, half-sent and blank-line connections are
//! closed within the header-read timeout; connections beyond the cap wait for
//! a free slot; good requests are served meanwhile.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use stratus_local::gateway::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;

/// An answer to a malformed request comes at once, well within the header-read timeout.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The platform with only what the gateway's requests reach: the API, and
/// the bootstrap for the admin's keys.
fn platform(env: &TestEnv) -> Platform {
    Platform::start_with(env, |m| {
        m["functions"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] == "api" || f["name"] == "bootstrap");
        m["processes"] = serde_json::json!([]);
    })
}

fn gateway(p: &Platform) -> String {
    p.runner.gateway.clone().unwrap()
}

/// What came back on one connection: every byte until the server closed it,
/// or until `within` passed (then `closed` is false).
struct Reply {
    bytes: Vec<u8>,
    closed: bool,
    elapsed: Duration,
}

impl Reply {
    fn text(&self) -> String {
        let shown = &self.bytes[..self.bytes.len().min(600)];
        format!(
            "{:?} after {:.1?} (closed: {})",
            String::from_utf8_lossy(shown),
            self.elapsed,
            self.closed
        )
    }
}

/// Sends `request` on a new connection (writing while reading, so that a
/// server that answers before reading everything is heard), keeps the
/// connection's write side open, and reads until the server closes it.
async fn exchange(addr: &str, request: Vec<u8>, within: Duration) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&request).await;
        write
    });
    let reply = read_until_closed(&mut read, started, within).await;
    drop(writer.await);
    reply
}

async fn read_until_closed(
    read: &mut (impl AsyncReadExt + Unpin),
    started: Instant,
    within: Duration,
) -> Reply {
    let mut bytes = Vec::new();
    let closed = loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, read.read_buf(&mut bytes)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) => break false,
        }
    };
    Reply {
        bytes,
        closed,
        elapsed: started.elapsed(),
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The HTTP/1.1 responses in `bytes`, one after another.
fn responses(mut bytes: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let rest = &bytes[end + 4..];
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(rest.len())
            .min(rest.len());
        out.push(Response {
            status,
            headers,
            body: rest[..len].to_vec(),
        });
        bytes = &rest[len..];
    }
    out
}

/// Why `response` is not CloudStack's 400 envelope, if it is not.
fn not_an_envelope(response: &Response) -> Option<String> {
    let body: Value = match serde_json::from_slice(&response.body) {
        Ok(v) => v,
        Err(_) => {
            return Some(format!(
                "HTTP {} with a body that is not JSON: {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
    };
    let error = &body["errorresponse"];
    let text = error["errortext"].as_str().unwrap_or("");
    let json = response
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    if response.status == 400
        && error["errorcode"] == 400
        && error["uuidList"] == serde_json::json!([])
        && !text.is_empty()
        && json
        && response.header("x-description") == Some(text)
    {
        None
    } else {
        Some(format!("HTTP {} {body}", response.status))
    }
}

/// Checks that `reply` is one CloudStack 400 envelope, sent at once, then a close.
fn check_envelope(what: &str, reply: &Reply, failures: &mut Vec<String>) {
    let all = responses(&reply.bytes);
    let problem = match all.as_slice() {
        _ if !reply.closed || reply.elapsed > ANSWER_WITHIN => {
            Some(format!("no answer and close within {ANSWER_WITHIN:?}"))
        }
        [one] => not_an_envelope(one),
        _ => Some(format!("{} responses", all.len())),
    };
    if let Some(p) = problem {
        failures.push(format!("{what}: {p}: {}", reply.text()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_requests_get_cloudstack_envelopes() {
    let env = TestEnv::new("gateway-malformed");
    let p = platform(&env);
    let addr = gateway(&p);
    let line = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
    let long_url = |len: usize| {
        let mut r = line(&format!(
            "/client/api?command=listZones&x={}",
            "a".repeat(len)
        ));
        r.push_str("\r\n");
        r.into_bytes()
    };
    let headers = |count: usize| {
        let mut r = line("/client/api?command=listZones");
        for i in 0..count {
            r.push_str(&format!("X-Probe-{i}: {i}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    };
    let mut control = line("/client/api?command=listZones&x=\x01\x02").into_bytes();
    control.extend_from_slice(b"\r\n");
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame, as an HTTP/2 client sends right after its preface.
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("control bytes in the URL", control),
        ("a 70,000-byte URL", long_url(70_000)),
        ("a 1 MB URL", long_url(1 << 20)),
        ("2,000 headers", headers(2_000)),
        ("150 short headers", headers(150)),
        ("100 KB of blank lines", b"\r\n".repeat(50_000)),
        ("an HTTP/2 prior-knowledge preface", h2),
        (
            "a body framed twice",
            format!(
                "POST /client/api HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            )
            .into_bytes(),
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in cases {
        let reply = exchange(&addr, request, ANSWER_WITHIN * 3).await;
        check_envelope(what, &reply, &mut failures);
    }
    // On a kept-alive connection: a good request is answered by the API, then
    // the malformed one that follows it gets the envelope.
    let mut pipelined = line("/client/api?command=listZones&response=json").into_bytes();
    pipelined.extend_from_slice(b"\r\n");
    pipelined.extend_from_slice(b"GET /client/api?\x7f HTTP/1.1\r\n\r\n");
    let reply = exchange(&addr, pipelined, ANSWER_WITHIN * 3).await;
    match responses(&reply.bytes).as_slice() {
        [first, second] if first.status == 401 && reply.closed => {
            if let Some(p) = not_an_envelope(second) {
                failures.push(format!("after a good request: {p}"));
            }
        }
        _ => failures.push(format!(
            "a good request then a malformed one: {}",
            reply.text()
        )),
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn good_requests_are_served_in_every_framing_on_one_connection() {
    let env = TestEnv::new("gateway-framing");
    let p = platform(&env);
    let addr = gateway(&p);
    let form = "command=listZones&response=json";
    // A chunked body (with an extension and a trailer), a sized body, a GET,
    // with blank lines before the second: each reaches the API (401, unsigned).
    let request = format!(
        "POST /client/api HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n\
         7;ext=1\r\ncommand\r\n{:x}\r\n{}\r\n0\r\nX-Trailer: t\r\n\r\n\
         \r\n\r\n\
         POST /client/api HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}\
         GET /client/api?{form} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        form.len() - 7,
        &form[7..],
        form.len(),
    );
    let reply = exchange(&addr, request.into_bytes(), Duration::from_secs(15)).await;
    let all = responses(&reply.bytes);
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![401, 401, 401], "{}", reply.text());
    for r in &all {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body["listzonesresponse"]["errorcode"],
            401,
            "{}",
            reply.text()
        );
    }
    assert!(reply.closed, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_half_sent_connections_are_closed_within_the_header_read_timeout() {
    let env = TestEnv::new("gateway-slow");
    let p = platform(&env);
    let addr = gateway(&p);
    let bound = HEADER_READ_TIMEOUT * 2 + Duration::from_secs(5);
    // 100 connections held: silent, half a head, a head without its blank line, blank lines.
    let partial: [&[u8]; 4] = [
        b"",
        b"GET /client/api?command=listZones HT",
        b"GET /client/api?command=listZones HTTP/1.1\r\nHost: x\r\n",
        b"\r\n\r\n\r\n",
    ];
    let started = Instant::now();
    let mut held = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(partial[i % partial.len()]).await.unwrap();
        held.push(s);
    }
    // Meanwhile a good request is served.
    let asked = Instant::now();
    let (status, zones) = p.get(&[("command", "listZones")]).await;
    assert_eq!(status, 200, "{zones}");
    assert_eq!(zones["listzonesresponse"]["count"], 1, "{zones}");
    assert!(
        asked.elapsed() < ANSWER_WITHIN,
        "served in {:?}",
        asked.elapsed()
    );
    // Every held connection is closed, without an answer, within the timeout.
    let mut slowest = Duration::ZERO;
    for (i, s) in held.iter_mut().enumerate() {
        let reply = read_until_closed(s, started, bound).await;
        assert!(
            reply.closed,
            "connection {i} ({:?}) still open after {:?}",
            String::from_utf8_lossy(partial[i % partial.len()]),
            reply.elapsed
        );
        slowest = slowest.max(reply.elapsed);
    }
    assert!(
        slowest >= HEADER_READ_TIMEOUT.mul_f32(0.9),
        "closed after {slowest:?}, before the timeout"
    );
    eprintln!("100 held connections closed within {slowest:.1?} (timeout {HEADER_READ_TIMEOUT:?})");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let env = TestEnv::new("gateway-cap");
    let p = platform(&env);
    let addr = gateway(&p);
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Let the gateway accept them all (it takes them in order, the oldest first).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = Instant::now();
    let request = format!(
        "GET /client/api?command=listZones&response=json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    extra.write_all(request.as_bytes()).await.unwrap();
    let early = read_until_closed(&mut extra, opened, Duration::from_secs(3)).await;
    assert!(
        early.bytes.is_empty() && !early.closed,
        "connection {} was answered while {MAX_CONNECTIONS} were open: {}",
        MAX_CONNECTIONS + 1,
        early.text()
    );
    // The held connections send nothing: at the header-read timeout they are
    // closed, and the waiting one is served.
    let bound = HEADER_READ_TIMEOUT * 2 + Duration::from_secs(5);
    let mut reply = read_until_closed(&mut extra, opened, bound).await;
    reply.bytes.splice(0..0, early.bytes);
    let all = responses(&reply.bytes);
    assert!(
        all.len() == 1 && all[0].status == 401 && reply.closed,
        "{}",
        reply.text()
    );
    assert!(
        reply.elapsed >= HEADER_READ_TIMEOUT.mul_f32(0.8),
        "{}",
        reply.text()
    );
    drop(held);
}
