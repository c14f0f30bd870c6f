//! khttp-proxy: khttp in front of any web application, TUX's arrangement. It attaches to a
//! reserved prefix as an application (`khttp-app`) and forwards every request khttp's cache
//! cannot answer to an upstream HTTP server, with keep-alive to it; the upstream's
//! `Cache-Control` decides whether and how long khttp may keep the answer, so that later
//! requests for it never leave the kernel (or khttpd) at all.
//!
//! ```sh
//! khttp-proxy --prefix http://+:8080/ --upstream http://127.0.0.1:9000
//! ```
//!
//! Upstream failures are 502, upstream time-outs 504. The HTTP client is `ureq`, a well-kept
//! blocking client: khttp-app's API is blocking, one request per thread at a time.
//!
//! An upstream body up to `--buffer-bytes` (1 MiB) is answered whole, and may be cached; a
//! larger one is streamed to the client as it arrives (`Content-Length` when the upstream gave
//! one, chunked otherwise), never held whole, and a slow client slows the upstream read down.
//! An upstream that fails half-way gives the client a reset, never a short body that looks
//! whole. A request body, which khttp reads whole first (up to its `max-queued-body-bytes`,
//! 1 MiB by default), streams on to the upstream with its `Content-Length`, fetched from khttp
//! piece by piece as the upstream takes it (`Request::body_reader`): the proxy never holds it
//! whole either.
//!
//! What reaches the upstream (issue #21), as nginx's `proxy_pass` with its usual headers:
//! - the request's canonical path and query, the one khttp routed and keys its cache on
//!   (`Request::path`), never the raw target, which may name another resource (`/a/x%2F..%2Fb`)
//!   or one outside the proxy's prefix;
//! - no hop-by-hop field: those RFC 9110 §7.6.1 names, and those the `Connection` field lists,
//!   both ways; no `Proxy-Authorization`, which is for this proxy (§11.7.2);
//! - `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto` and `Forwarded` (RFC 7239) that
//!   the proxy sets itself from the client's address and `Host`. Incoming ones are dropped, so
//!   that a client cannot pose as another address; with `--trust-forwarded` (khttp behind
//!   another proxy you run) the incoming `X-Forwarded-For` and `Forwarded` are kept and
//!   appended to, as nginx's `$proxy_add_x_forwarded_for` does;
//! - no `CONNECT` (501): khttp is not a tunnel.
//!
//! An answer to a request with a body is never cached (khttp's rule: the body may have shaped
//! it).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use khttp_app::{Queue, Request, Response};
use ureq::http;
use ureq::{Agent, SendBody};

/// Forward the requests khttp cannot answer from its cache to an upstream HTTP server.
#[derive(Parser, Debug)]
#[command(name = "khttp-proxy", version, about)]
struct Args {
    /// The reserved URL prefix to serve, e.g. http://+:8080/
    #[arg(long)]
    prefix: String,
    /// The upstream server, e.g. http://127.0.0.1:9000 (the request's path is kept).
    #[arg(long)]
    upstream: String,
    /// khttpd's application socket, unix:PATH [default: $KHTTP_APP_ENDPOINT, else app.sock
    /// beside the control socket].
    #[arg(long)]
    endpoint: Option<String>,
    /// Requests handled at once (one attached handle each).
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Requests one handle may take at once when more wait than the other threads could take
    /// (1..=64): fewer calls under load. A request taken in a batch waits for its thread, so
    /// with a slow upstream `--batch 1` keeps each for the first free thread.
    #[arg(long, default_value_t = khttp_app::DEFAULT_BATCH)]
    batch: u32,
    /// Seconds to wait for the upstream's response head before answering 504.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The largest upstream body answered whole (and so cacheable); a larger one is streamed.
    #[arg(long, default_value_t = 1 << 20)]
    buffer_bytes: u64,
    /// The request queue's name.
    #[arg(long, default_value = "khttp-proxy")]
    queue: String,
    /// Keep the client's own `X-Forwarded-For` and `Forwarded` fields and append to them (only
    /// when every client reaches khttp through a proxy you trust); by default they are replaced.
    #[arg(long)]
    trust_forwarded: bool,
}

/// Fields that belong to one connection (RFC 9110 §7.6.1), or that khttp sets itself.
const NOT_FORWARDED: [&str; 12] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "date",
    "server",
];

/// Fields that say where a request came from: set by the proxy itself, from what it knows.
const FORWARDING: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

/// Whether a field of a message whose `Connection` field lists `connection` goes on to the
/// next hop.
fn forwarded(name: &str, connection: &[String]) -> bool {
    !NOT_FORWARDED.iter().any(|n| name.eq_ignore_ascii_case(n))
        && !connection.iter().any(|c| name.eq_ignore_ascii_case(c))
}

/// The field names a `Connection` field lists (RFC 9110 §7.6.1), lowercased.
fn connection_options<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|o| o.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|o| !o.is_empty())
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("khttp-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let endpoint: khttp_app::Endpoint = match &args.endpoint {
        Some(e) => e.parse().map_err(|m| format!("--endpoint: {m}"))?,
        None => khttp_app::default_endpoint(),
    };
    let upstream = args.upstream.trim_end_matches('/').to_owned();
    if !upstream.starts_with("http://") {
        return Err(format!("--upstream {upstream:?} must start with http://"));
    }
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        // Until the response head; a streamed body takes as long as it takes (a stalled one is
        // ended by khttp's app-response-timeout for each piece, which resets the client).
        .timeout_connect(Some(Duration::from_secs(args.timeout)))
        .timeout_send_request(Some(Duration::from_secs(args.timeout)))
        .timeout_send_body(Some(Duration::from_secs(args.timeout)))
        .timeout_recv_response(Some(Duration::from_secs(args.timeout)))
        .max_idle_connections_per_host(args.threads.max(1))
        .build()
        .into();
    let first = Queue::attach_to(&endpoint, &args.queue, &[&args.prefix])
        .map_err(|e| format!("{}: {e}", args.prefix))?;
    println!(
        "khttp-proxy: {} -> {upstream} ({} threads)",
        args.prefix, args.threads
    );
    let mut handles = Vec::new();
    let mut queues = Vec::new();
    for _ in 1..args.threads.max(1) {
        queues.push(first.try_clone().map_err(|e| e.to_string())?);
    }
    queues.push(first);
    for mut q in queues {
        q.set_whole_bodies(false);
        q.set_batch(args.batch);
        let agent = agent.clone();
        let upstream = upstream.clone();
        let max = args.buffer_bytes;
        let trust = args.trust_forwarded;
        handles.push(std::thread::spawn(move || -> String {
            loop {
                let request = match q.receive() {
                    Ok(r) => r,
                    Err(e) => return e.to_string(),
                };
                for news in q.take_news() {
                    eprintln!("khttp-proxy: {news}");
                }
                let to = Upstream {
                    agent: &agent,
                    base: &upstream,
                    max,
                    trust,
                };
                let result = match forward(&to, &request, &mut q) {
                    // Sent without waiting: only what went wrong comes back, as news.
                    Answer::Whole(response) => request.send(&mut q, response),
                    Answer::Stream { head, length, rest } => {
                        stream(request, &mut q, head, length, rest)
                    }
                };
                if let Err(e) = result {
                    eprintln!("khttp-proxy: {e}");
                }
            }
        }));
    }
    // A thread stops only when khttpd is gone; the first one's reason ends the proxy.
    let reason = handles
        .into_iter()
        .next()
        .map(|h| h.join().unwrap_or_else(|_| "a thread panicked".into()))
        .unwrap_or_default();
    Err(reason)
}

/// What the upstream answered.
enum Answer {
    /// The whole response.
    Whole(Response),
    /// A body larger than `--buffer-bytes`: the head with the first piece, and the rest to
    /// come from the upstream.
    Stream {
        head: Response,
        length: Option<u64>,
        rest: ureq::BodyReader<'static>,
    },
}

/// Streams the upstream's body to the client; an upstream that fails half-way leaves the
/// answer unfinished, which resets the client's connection.
fn stream(
    request: Request,
    queue: &mut Queue,
    head: Response,
    length: Option<u64>,
    mut rest: ureq::BodyReader<'static>,
) -> Result<(), khttp_app::Error> {
    let mut body = request.respond_stream(queue, head, length)?;
    match std::io::copy(&mut rest, &mut body) {
        Ok(_) => body.finish().map(drop),
        // The client left: nothing to say.
        Err(_) if !body.delivered() => Ok(()),
        Err(e) => Err(khttp_app::Error::Io(e)),
    }
}

/// Where requests go, and how.
struct Upstream<'a> {
    agent: &'a Agent,
    /// `http://host:port`, no trailing slash.
    base: &'a str,
    /// `--buffer-bytes`.
    max: u64,
    /// `--trust-forwarded`.
    trust: bool,
}

/// The fields saying where a request from `remote` with `headers` came from: (name, value)
/// pairs to add.
fn forwarding_fields(
    remote: &str,
    headers: &[(String, Vec<u8>)],
    trust: bool,
) -> Vec<(&'static str, String)> {
    let (ip, _) = remote.rsplit_once(':').unwrap_or((remote, ""));
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
        .unwrap_or_default();
    let earlier = |name: &str| {
        let all: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
            .collect();
        Some(all.join(", ")).filter(|v| trust && !v.is_empty())
    };
    let chain = |earlier: Option<String>, mine: String| match earlier {
        Some(e) => format!("{e}, {mine}"),
        None => mine,
    };
    // RFC 7239 §6: an IPv6 node is quoted and bracketed; an unknown one is "unknown".
    let node = if ip.is_empty() {
        "unknown".to_owned()
    } else if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip.to_owned()
    };
    let mut forwarded = format!("for={node};proto=http");
    if !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        forwarded.push_str(&format!(";host=\"{host}\""));
    }
    let mut fields = vec![
        ("forwarded", chain(earlier("forwarded"), forwarded)),
        ("x-forwarded-proto", "http".to_owned()),
    ];
    if !ip.is_empty() {
        fields.push((
            "x-forwarded-for",
            chain(earlier("x-forwarded-for"), ip.to_owned()),
        ));
    }
    if !host.is_empty() {
        fields.push(("x-forwarded-host", host));
    }
    fields
}

/// One request, upstream and back.
fn forward(to: &Upstream<'_>, request: &Request, q: &mut Queue) -> Answer {
    if request.method.eq_ignore_ascii_case("CONNECT") {
        return Answer::Whole(failure(501, "khttp-proxy does not tunnel (CONNECT)"));
    }
    let agent = to.agent;
    let mut builder = http::Request::builder()
        .method(request.method.as_str())
        .uri(format!("{}{}", to.base, request.path));
    let connection = connection_options(
        request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| v.as_slice()),
    );
    for (name, value) in &request.headers {
        if forwarded(name, &connection) && !FORWARDING.iter().any(|n| name.eq_ignore_ascii_case(n))
        {
            builder = builder.header(name.as_str(), value.as_slice());
        }
    }
    for (name, value) in forwarding_fields(&request.remote, &request.headers, to.trust) {
        builder = builder.header(name, value);
    }
    let sent = if request.body_len == 0 {
        builder.body(Vec::new()).map(|r| agent.run(r))
    } else {
        // The body as the upstream takes it, with its length (many servers refuse chunked
        // requests: Python's http.server reads none).
        let mut body = request.body_reader(q);
        builder
            .header("content-length", request.body_len)
            .body(SendBody::from_reader(&mut body))
            .map(|r| agent.run(r))
    };
    let Ok(sent) = sent else {
        return Answer::Whole(failure(400, "the request cannot be forwarded"));
    };
    let reply = match sent {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => {
            return Answer::Whole(failure(504, "the upstream did not answer in time"));
        }
        Err(e) => return Answer::Whole(failure(502, &format!("the upstream failed: {e}"))),
    };
    answer(reply, to.max)
}

/// The upstream's reply as the answer to give: whole when its body ends within `max` bytes
/// (cached when its `Cache-Control` allows), streamed otherwise.
fn answer(reply: http::Response<ureq::Body>, max: u64) -> Answer {
    let mut response = Response::new(reply.status().as_u16());
    let length = reply
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut cache_control = String::new();
    let connection = connection_options(
        reply
            .headers()
            .get_all("connection")
            .iter()
            .map(http::HeaderValue::as_bytes),
    );
    for (name, value) in reply.headers() {
        let name = name.as_str();
        let Ok(value) = value.to_str() else { continue };
        if name.eq_ignore_ascii_case("cache-control") {
            if !cache_control.is_empty() {
                cache_control.push(',');
            }
            cache_control.push_str(value);
        }
        if forwarded(name, &connection) {
            response = response.header(name, value);
        }
    }
    // Up to `max` bytes now: a body that ends within them is answered whole.
    let mut rest = reply.into_body().into_reader();
    let mut first = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut rest, max.saturating_add(1)),
        &mut first,
    ) {
        return Answer::Whole(if e.kind() == std::io::ErrorKind::TimedOut {
            failure(504, "the upstream did not answer in time")
        } else {
            failure(502, &format!("the upstream's body failed: {e}"))
        });
    }
    if first.len() as u64 > max {
        return Answer::Stream {
            head: response.body(first),
            length,
            rest,
        };
    }
    response = response.body(first);
    if let Some(ttl) = cache_ttl(&cache_control) {
        response = response.cache_for(ttl);
    }
    Answer::Whole(response)
}

/// How long khttp may keep a response, by its `Cache-Control` (RFC 9111 §5.2.2): `s-maxage`,
/// else `max-age`, for a shared cache; never with `no-store`, `private` or `no-cache` (khttp
/// does not revalidate), nor without an explicit lifetime.
fn cache_ttl(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" | "private" | "no-cache" => return None,
            "max-age" => max_age = value.parse::<u64>().ok(),
            "s-maxage" => s_maxage = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    s_maxage
        .or(max_age)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

fn failure(status: u16, text: &str) -> Response {
    Response::new(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{cache_ttl, connection_options, forwarded, forwarding_fields};

    #[test]
    fn cache_control_decides_the_ttl() {
        assert_eq!(cache_ttl("max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(
            cache_ttl("public, max-age=60, s-maxage=5"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(cache_ttl("max-age=60, private"), None);
        assert_eq!(cache_ttl("no-store"), None);
        assert_eq!(cache_ttl("no-cache, max-age=60"), None);
        assert_eq!(cache_ttl("max-age=0"), None);
        assert_eq!(cache_ttl(""), None);
        assert_eq!(cache_ttl("max-age=\"30\""), Some(Duration::from_secs(30)));
    }

    #[test]
    fn hop_by_hop_fields_stay_behind() {
        let listed = connection_options([&b"close, X-Secret"[..], b" keep-alive ,"].into_iter());
        assert_eq!(listed, ["close", "x-secret", "keep-alive"]);
        assert!(!forwarded("X-Secret", &listed));
        assert!(!forwarded("Proxy-Authorization", &[]));
        assert!(!forwarded("TE", &[]));
        assert!(forwarded("Accept", &listed));
    }

    #[test]
    fn the_proxy_says_where_a_request_came_from() {
        let fields = |(remote, headers): (&str, Vec<(String, Vec<u8>)>), trust| {
            let mut f: Vec<String> = forwarding_fields(remote, &headers, trust)
                .into_iter()
                .map(|(n, v)| format!("{n}: {v}"))
                .collect();
            f.sort();
            f
        };
        let client: Vec<(String, Vec<u8>)> =
            [("Host", "example.com:8080"), ("X-Forwarded-For", "6.6.6.6")]
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect();
        let request = |remote| (remote, client.clone());
        assert_eq!(
            fields(request("192.0.2.1:5555"), false),
            [
                "forwarded: for=192.0.2.1;proto=http;host=\"example.com:8080\"",
                "x-forwarded-for: 192.0.2.1",
                "x-forwarded-host: example.com:8080",
                "x-forwarded-proto: http",
            ]
        );
        assert_eq!(
            fields(request("[::1]:5555"), true)[..2],
            [
                "forwarded: for=\"[::1]\";proto=http;host=\"example.com:8080\"",
                "x-forwarded-for: 6.6.6.6, ::1",
            ]
        );
    }
}
