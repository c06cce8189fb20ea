//! Serving the gateway's connections as a production HTTP/1.1 server does:
//! a bounded request head, a header-read timeout, a cap on connections, and
//! CloudStack's error envelope for a malformed or oversized request.
//!
//! hyper parses request heads itself and answers what it cannot parse before
//! any handler runs, with an empty body: 400 for bad bytes, 414 for a URI over
//! 64 KB, and 431 for too many or too large headers, which a CloudStack client
//! reads as CloudStack's 431 (a parameter error). So each connection's bytes
//! pass through a [`Guard`] first: it reads every request head itself (up to
//! [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`]), checks it as hyper would, and
//! hands hyper only heads that hyper accepts, with their bodies (the guard
//! follows `Content-Length` and chunked framing to find the next head). When
//! a head is refused, hyper is shut down gracefully (finishing any answer in
//! flight), and the guard's socket answers the envelope and closes.
//!
//! hyper's own header-read timeout runs while the guard holds back an
//! incomplete head, so a silent, half-sent or blank-line connection is closed
//! at [`HEADER_READ_TIMEOUT`].

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, Method, StatusCode, Uri};
use bytes::{Buf, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use stratus_cloudstack::envelope::{self, Format};
use stratus_cloudstack::error::{ApiError, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tower_service::Service;

/// How long a client may take to send a whole request head, and how long a
/// kept-alive connection may sit idle. A CloudStack client sends its head in
/// one write, so 10 s is far beyond any real one, and a silent or half-sent
/// connection gives back its slot quickly (nginx waits 60 s and hyper 30 s,
/// for slow clients across the internet, which a local runner does not have).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. Beyond it, new connections wait in the listen
/// backlog until one closes: a local runner's clients are the developer's own
/// tools, which would rather wait than fail (cs and Terraform do not retry a
/// 429), and every slot frees itself, as a request ends or at the header-read
/// timeout. 256 keeps the gateway's descriptors well within the default limit
/// of 1024 per process, next to the runner's own pipes and sockets, and far
/// above what clients open (the API benchmark keeps 2 connections by default).
pub const MAX_CONNECTIONS: usize = 256;

/// The largest request head: the request line and headers, with their line
/// ends. API Gateway's HTTP APIs allow 10,240 bytes of request line and
/// header values; counting names and line ends too is a little stricter, and
/// far above a signed CloudStack request (CloudStack itself, behind Jetty,
/// takes 8 KB).
pub const MAX_HEAD_BYTES: usize = 10_240;

/// The most request headers, as hyper's and Apache's default.
pub const MAX_HEADERS: usize = 100;

/// The longest chunk-size line of a chunked body (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// How long the envelope may take to be written, and the client's remaining
/// bytes to be read and dropped before closing (so that the close is not a
/// reset, which can lose the answer).
const LINGER: Duration = Duration::from_secs(2);

/// Accepts connections, [`MAX_CONNECTIONS`] at a time, and serves each with
/// `router`. Runs until the runner stops.
pub async fn serve(listener: TcpListener, router: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // As axum's `serve`: a connection that failed is skipped; out
                // of descriptors (or the like), wait for some to close.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) {
                    tracing::error!(error = %e, "HTTP gateway: accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let (http, router) = (http.clone(), router.clone());
        tokio::spawn(async move {
            serve_connection(&http, stream, peer, router).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    http: &http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
) {
    let (refuse, refused) = oneshot::channel();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        Box::pin(router.clone().call(request))
    });
    let mut connection = http.serve_connection(TokioIo::new(Guard::new(stream, refuse)), service);
    let mut refused = Some(refused);
    let mut refusal = None;
    let result = poll_fn(|cx| {
        if let Some(r) = refused.as_mut()
            && let Poll::Ready(sent) = Pin::new(r).poll(cx)
        {
            refused = None;
            if let Ok(text) = sent {
                refusal = Some(text);
                Pin::new(&mut connection).graceful_shutdown();
            }
        }
        connection.poll_without_shutdown(cx)
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "HTTP gateway: connection ended");
    }
    if let Some(text) = refusal {
        tracing::debug!(%peer, text, "HTTP gateway: refused a request");
        let stream = connection.into_parts().io.into_inner().stream;
        answer(stream, &text).await;
    }
}

/// Writes the CloudStack envelope for a refused request, then closes the
/// connection after reading what the client still sends, for up to [`LINGER`].
async fn answer(mut stream: TcpStream, text: &str) {
    let response = refusal_response(text);
    let written = tokio::time::timeout(LINGER, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 16 * 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The whole HTTP response to a refused request: CloudStack's error envelope
/// in JSON (no command is known, so under `errorresponse`), the status its
/// errorcode, the text in `X-Description` as CloudStack sends it, and the
/// connection closed.
///
/// The status is 400, which CloudStack's servlet itself answers before any
/// command runs: `ErrorCode` (CloudStack's codes) has no 414, and 431 is
/// CloudStack's parameter error, so an oversized head gets what Apache and
/// nginx answer for oversized headers.
fn refusal_response(text: &str) -> Vec<u8> {
    let error = ApiError {
        code: ErrorCode::BadRequest,
        cs_code: None,
        text: text.to_string(),
    };
    let r = envelope::error(Format::Json, "errorresponse", &error);
    let status = StatusCode::from_u16(r.status).expect("a CloudStack code is an HTTP status");
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nx-description: {}\r\nconnection: close\r\ndate: {date}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        r.content_type,
        r.body.len(),
        r.description.as_deref().unwrap_or(""),
    )
    .into_bytes();
    out.extend_from_slice(r.body.as_bytes());
    out
}

/// What the guard expects next from the client.
#[derive(Debug)]
enum Next {
    /// A request head.
    Head,
    /// This many more bytes of a sized body.
    Body(u64),
    Chunked(Chunked),
    /// Nothing: a head was refused, and hyper waits until it is shut down.
    Refused,
    /// The end of input for hyper: the client is gone, or sent a chunked
    /// body that hyper will fail.
    Ended,
}

/// The connection's bytes on their way to hyper: request heads checked
/// whole before hyper sees them, bodies passed on as they come.
struct Guard {
    stream: TcpStream,
    /// Bytes read from the client and not yet given to hyper.
    buf: BytesMut,
    /// How many of `buf`'s first bytes hyper may have.
    release: usize,
    next: Next,
    /// Blank lines dropped before the head being read (they count towards its size).
    skipped: usize,
    /// How far the head being read has been searched for its end.
    searched: usize,
    /// Where a refused head's text goes (taken when sent).
    refuse: Option<oneshot::Sender<String>>,
}

impl Guard {
    fn new(stream: TcpStream, refuse: oneshot::Sender<String>) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            release: 0,
            next: Next::Head,
            skipped: 0,
            searched: 0,
            refuse: Some(refuse),
        }
    }

    /// Sorts what is buffered: marks bytes hyper may have, or refuses a head.
    fn sort(&mut self) {
        match &mut self.next {
            Next::Head => {
                // Blank lines before a request line are ignored (as hyper
                // does), so they are dropped rather than kept.
                while !self.buf.is_empty() {
                    let blank = match self.buf[0] {
                        b'\n' => 1,
                        b'\r' if self.buf.get(1) == Some(&b'\n') => 2,
                        _ => break,
                    };
                    self.buf.advance(blank);
                    self.skipped += blank;
                    self.searched = 0;
                }
                if has_head_end(&self.buf, self.searched) {
                    match check_head(&self.buf) {
                        Ok(Some((len, next))) => {
                            (self.release, self.next) = (len, next);
                            (self.skipped, self.searched) = (0, 0);
                            return;
                        }
                        Ok(None) => {}
                        Err(text) => return self.refuse(text),
                    }
                }
                self.searched = self.buf.len();
                if self.skipped + self.buf.len() >= MAX_HEAD_BYTES {
                    let what = if self.buf.is_empty() || self.buf.contains(&b'\n') {
                        "request head too large"
                    } else {
                        "request URI too long"
                    };
                    self.refuse(too_large(what));
                }
            }
            Next::Body(left) => {
                let n = (*left).min(self.buf.len() as u64);
                *left -= n;
                self.release = n as usize;
                if *left == 0 {
                    self.next = Next::Head;
                }
            }
            Next::Chunked(chunked) => match chunked.scan(&self.buf) {
                Ok((n, ended)) => {
                    self.release = n;
                    if ended {
                        self.next = Next::Head;
                    }
                }
                // hyper decodes the same bytes, fails the request and closes
                // the connection.
                Err(()) => {
                    self.release = self.buf.len();
                    self.next = Next::Ended;
                }
            },
            Next::Refused | Next::Ended => {}
        }
    }

    fn refuse(&mut self, text: String) {
        self.next = Next::Refused;
        self.buf.clear();
        if let Some(refuse) = self.refuse.take() {
            let _ = refuse.send(text);
        }
    }
}

impl AsyncRead for Guard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.release > 0 {
                let n = this.release.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.release -= n;
                return Poll::Ready(Ok(()));
            }
            if !this.buf.is_empty() {
                this.sort();
                if this.release > 0 {
                    continue;
                }
            }
            match this.next {
                Next::Refused => return Poll::Pending,
                Next::Ended => return Poll::Ready(Ok(())),
                _ => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of input: hyper sees it as the client does (a partial
                // head or body is dropped, as hyper drops it).
                this.buf.clear();
                this.next = Next::Ended;
                return Poll::Ready(Ok(()));
            }
            this.buf.extend_from_slice(read.filled());
        }
    }
}

impl AsyncWrite for Guard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Whether `buf` holds the blank line that ends a head, searching from
/// `from` (with the three bytes before it, where the end may have begun).
fn has_head_end(buf: &[u8], from: usize) -> bool {
    let window = &buf[from.saturating_sub(3)..];
    window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n")
}

/// Checks a request head as hyper parses it: its length and what follows it,
/// `None` if it is not complete yet, or why it is refused.
fn check_head(buf: &[u8]) -> Result<Option<(usize, Next)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error(buf, e)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(too_large("request head too large"));
    }
    let malformed = |what: &str| format!("malformed HTTP request: {what}");
    let method = request.method.unwrap_or_default();
    if Method::from_bytes(method.as_bytes()).is_err() {
        return Err(malformed("invalid method"));
    }
    if Uri::try_from(request.path.unwrap_or_default()).is_err() {
        return Err(malformed("invalid request target"));
    }
    let http11 = request.version == Some(1);
    let (mut length, mut chunked, mut transfer_encoding) = (None, false, false);
    for h in request.headers.iter() {
        if HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            return Err(malformed("invalid header name"));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                // hyper's largest body length.
                .filter(|n| *n <= u64::MAX - 2);
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(before)) if n == before => {}
                _ => return Err(malformed("invalid Content-Length")),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // As hyper: chunked must be the last coding of the last field.
            chunked = std::str::from_utf8(h.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
        }
    }
    let next = match (transfer_encoding, length) {
        // A body framed twice is how requests are smuggled (RFC 9112 6.3).
        (true, Some(_)) => return Err(malformed("both Transfer-Encoding and Content-Length")),
        (true, None) if !http11 || !chunked => {
            return Err(malformed("Transfer-Encoding other than chunked"));
        }
        (true, None) => Next::Chunked(Chunked::Size(Vec::new())),
        (false, Some(n)) if n > 0 => Next::Body(n),
        (false, _) => Next::Head,
    };
    Ok(Some((len, next)))
}

fn too_large(what: &str) -> String {
    format!("{what}: the gateway takes a request line and headers of up to {MAX_HEAD_BYTES} bytes")
}

fn parse_error(buf: &[u8], e: httparse::Error) -> String {
    match e {
        httparse::Error::TooManyHeaders => {
            format!("too many request headers: the gateway takes up to {MAX_HEADERS}")
        }
        httparse::Error::Version if buf.starts_with(b"PRI * HTTP/2.0") => {
            "HTTP/2 is not supported: the gateway speaks HTTP/1.1".into()
        }
        httparse::Error::Version => "unsupported HTTP version: the gateway speaks HTTP/1.1".into(),
        httparse::Error::Token => {
            "malformed HTTP request: invalid character in the request line".into()
        }
        httparse::Error::HeaderName => "malformed HTTP request: invalid header name".into(),
        httparse::Error::HeaderValue => "malformed HTTP request: invalid header value".into(),
        httparse::Error::NewLine | httparse::Error::Status => {
            "malformed HTTP request: invalid line ending".into()
        }
    }
}

/// Where a chunked body ends, found as its bytes go by (hyper decodes them;
/// the guard needs only the end, where the next head begins).
#[derive(Debug)]
enum Chunked {
    /// In a chunk-size line: its bytes so far.
    Size(Vec<u8>),
    /// In a chunk's data: this many bytes to go, with the CRLF after it.
    Data(u64),
    /// In the trailer section: bytes in the current line so far (an empty line ends it).
    Trailer(usize),
}

impl Chunked {
    /// Follows the body through `bytes`: how many of them belong to it, and
    /// whether it ended there; `Err` if the framing is invalid.
    fn scan(&mut self, bytes: &[u8]) -> Result<(usize, bool), ()> {
        let mut i = 0;
        while i < bytes.len() {
            match self {
                Chunked::Size(line) => {
                    line.push(bytes[i]);
                    i += 1;
                    if bytes[i - 1] == b'\n' {
                        *self = match httparse::parse_chunk_size(line) {
                            Ok(httparse::Status::Complete((_, 0))) => Chunked::Trailer(0),
                            Ok(httparse::Status::Complete((_, size))) => {
                                Chunked::Data(size.checked_add(2).ok_or(())?)
                            }
                            _ => return Err(()),
                        };
                    } else if line.len() > MAX_CHUNK_LINE {
                        return Err(());
                    }
                }
                Chunked::Data(left) => {
                    let n = (*left).min((bytes.len() - i) as u64);
                    *left -= n;
                    i += n as usize;
                    if *left == 0 {
                        *self = Chunked::Size(Vec::new());
                    }
                }
                Chunked::Trailer(line) => {
                    i += 1;
                    match bytes[i - 1] {
                        b'\n' if *line == 0 => return Ok((i, true)),
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ if *line >= MAX_HEAD_BYTES => return Err(()),
                        _ => *line += 1,
                    }
                }
            }
        }
        Ok((i, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Result<Option<(usize, String)>, String> {
        check_head(bytes).map(|o| o.map(|(len, next)| (len, format!("{next:?}"))))
    }

    #[test]
    fn heads_are_checked_as_hyper_parses_them() {
        let get = b"GET /client/api?command=listZones HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(head(get), Ok(Some((get.len() - 4, "Head".into()))));
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        let post = b"POST / HTTP/1.1\r\ncontent-length: 12\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(head(post), Ok(Some((post.len(), "Body(12)".into()))));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            head(chunked),
            Ok(Some((chunked.len(), "Chunked(Size([]))".into())))
        );
        for bad in [
            &b"GET /\x01 HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nA\x01: b\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(head(many.as_bytes()).unwrap_err().contains("too many"));
    }

    #[test]
    fn a_head_ends_at_an_empty_line_split_anywhere() {
        assert!(has_head_end(b"GET / HTTP/1.1\r\n\r\n", 0));
        assert!(has_head_end(b"GET / HTTP/1.1\n\n", 0));
        assert!(has_head_end(b"GET / HTTP/1.1\r\n\r\n", 16));
        assert!(!has_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0));
    }

    #[test]
    fn a_chunked_body_ends_after_its_trailers_wherever_it_is_split() {
        let body =
            b"7;ext=1\r\ncommand\r\n1A\r\n=listZones&response=json00\r\n0\r\nX-T: t\r\n\r\nGET";
        let end = body.len() - 3;
        for split in 0..body.len() {
            let mut c = Chunked::Size(Vec::new());
            let (n, ended) = c.scan(&body[..split]).unwrap();
            if ended {
                assert_eq!(n, end);
                continue;
            }
            assert_eq!(n, split);
            assert_eq!(c.scan(&body[split..]), Ok((end - split, true)), "{split}");
        }
        assert_eq!(Chunked::Size(Vec::new()).scan(b"0\r\n\r\n"), Ok((5, true)));
        assert!(Chunked::Size(Vec::new()).scan(b"zz\r\n").is_err());
    }

    #[test]
    fn a_refusal_is_cloudstacks_envelope_with_its_code_as_status() {
        let r = String::from_utf8(refusal_response("too many request headers")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains("content-type: application/json; charset=UTF-8\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(head.contains("x-description: too many request headers\r\n"));
        assert!(head.contains("connection: close\r\n"));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            serde_json::json!({"errorresponse": {"uuidList": [], "errorcode": 400, "errortext": "too many request headers"}})
        );
    }
}
