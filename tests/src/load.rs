//! Load that checks what it gets, shared by the reliability suite (`tests/reliability.rs`) and
//! the soak (`khttp-soak`, run by `bench/soak.sh`): clients that fetch and verify every body
//! byte, a crowd of idle and slowloris connections, and control-plane churn.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{Conn, host};

/// Deterministic bytes, different for every seed and offset.
#[must_use]
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A URL path and every body it may legitimately have while the load runs.
#[derive(Clone, Debug)]
pub struct Expect {
    pub path: String,
    /// Whole bodies that a 200 may carry (several while churn replaces the entry).
    pub bodies: Vec<Vec<u8>>,
    /// Whether 404 is a right answer (churn deletes the entry at times).
    pub may_be_missing: bool,
}

/// What the load saw: counts and every fault, in words.
#[derive(Debug, Default)]
pub struct Tally {
    pub responses: AtomicU64,
    pub bytes_verified: AtomicU64,
    pub not_found: AtomicU64,
    pub control_commands: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    pub fn error(&self, what: String) {
        let mut e = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if e.len() < 100 {
            e.push(what);
        }
    }

    #[must_use]
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "{} responses, {} body bytes verified, {} answered 404, {} control commands, {} errors",
            self.responses.load(Ordering::Relaxed),
            self.bytes_verified.load(Ordering::Relaxed),
            self.not_found.load(Ordering::Relaxed),
            self.control_commands.load(Ordering::Relaxed),
            self.errors().len(),
        )
    }
}

/// Fetches `expect` round-robin on keep-alive connections until `stop`, checking every response:
/// a 200 must carry exactly one of the allowed bodies, whole; a 404 only where allowed; nothing
/// else may come back, and a connection may not end in the middle.
pub fn fetch_loop(port: u16, expect: &[Expect], stop: &AtomicBool, tally: &Tally) {
    let mut conn: Option<Conn> = None;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Some(e) = expect.get(i % expect.len().max(1)) else {
            return;
        };
        i = i.wrapping_add(1);
        let c = conn.get_or_insert_with(|| Conn::open(port));
        c.send(format!("GET {} HTTP/1.1\r\nHost: h\r\n\r\n", e.path).as_bytes());
        let Some(r) = c.read(false) else {
            tally.error(format!(
                "GET {}: the connection ended before a whole response",
                e.path
            ));
            conn = None;
            continue;
        };
        tally.responses.fetch_add(1, Ordering::Relaxed);
        match r.status {
            200 if e.bodies.contains(&r.body) => {
                tally
                    .bytes_verified
                    .fetch_add(r.body.len() as u64, Ordering::Relaxed);
            }
            200 => tally.error(format!(
                "GET {}: a {}-byte body that matches none of the {} allowed",
                e.path,
                r.body.len(),
                e.bodies.len()
            )),
            404 if e.may_be_missing => {
                tally.not_found.fetch_add(1, Ordering::Relaxed);
            }
            s => tally.error(format!("GET {}: status {s}", e.path)),
        }
        if r.header("connection") == Some("close") {
            conn = None;
        }
    }
}

/// Connections that hold server resources without finishing a request: idle ones (connected,
/// silent) and slowloris ones (a head trickled a byte at a time).
#[derive(Debug, Default)]
pub struct Crowd {
    pub idle: Vec<TcpStream>,
    pub loris: Vec<TcpStream>,
}

impl Crowd {
    /// Opens `n` connections to `port`, half of each kind; stops early (and says how far it
    /// got) if the system refuses more.
    ///
    /// # Errors
    /// The connect error, with how many were open.
    pub fn open(port: u16, n: usize) -> Result<Self, String> {
        let mut c = Self::default();
        for i in 0..n {
            let s = TcpStream::connect((host().as_str(), port))
                .map_err(|e| format!("connection {i} of {n}: {e}"))?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            if i % 2 == 0 {
                c.idle.push(s);
            } else {
                // Over TLS the trickle is a ClientHello's: a record header promising 512
                // bytes, then a byte at a time.
                let start: &[u8] = if crate::tls::enabled() {
                    &[22, 3, 1, 2, 0, 1]
                } else {
                    b"GET / HTTP/1.1\r\nX-Slow: "
                };
                let _ = (&s).write(start);
                c.loris.push(s);
            }
        }
        Ok(c)
    }

    /// Sends one more header byte on every slowloris connection.
    pub fn trickle(&mut self) {
        for s in &self.loris {
            let _ = (&*s).write(b"a");
        }
    }

    /// How many connections the server has closed (or reset).
    #[must_use]
    pub fn closed(&self) -> usize {
        let mut buf = [0u8; 1];
        self.idle
            .iter()
            .chain(&self.loris)
            .filter(|s| match s.peek(&mut buf) {
                Ok(_) => true, // EOF (0) or an answer: either way no longer held open
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            })
            .count()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.idle.len() + self.loris.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entities that churn changes under `base` (`http://+:PORT/`), and what fetchers may see.
#[derive(Debug, Clone)]
pub struct ChurnSet {
    /// `churn/stable`: replaced by one version or the other, never missing.
    pub stable: [Vec<u8>; 2],
    /// `churn/toggle`: put and deleted in turn.
    pub toggle: Vec<u8>,
    /// `flush/x`: flushed with its prefix, then put again.
    pub flushed: Vec<u8>,
}

impl ChurnSet {
    /// Bodies of `large` bytes for the replaced entry (large, so that downloads overlap
    /// replacements), small ones for the others.
    #[must_use]
    pub fn new(large: usize) -> Self {
        Self {
            stable: [pattern(large, 1), pattern(large, 2)],
            toggle: pattern(1000, 3),
            flushed: pattern(5000, 4),
        }
    }

    /// What fetchers may see.
    #[must_use]
    pub fn expect(&self) -> Vec<Expect> {
        vec![
            Expect {
                path: "/churn/stable".into(),
                bodies: self.stable.to_vec(),
                may_be_missing: false,
            },
            Expect {
                path: "/churn/toggle".into(),
                bodies: vec![self.toggle.clone()],
                may_be_missing: true,
            },
            Expect {
                path: "/flush/x".into(),
                bodies: vec![self.flushed.clone()],
                may_be_missing: true,
            },
        ]
    }
}

/// Control-plane churn until `stop`: `ctl` runs one khttpctl command and says whether it
/// succeeded. `files` holds the bodies of `set` as files (`stable0`, `stable1`, `toggle`,
/// `flushed`); `other_port` is reserved and released in turn (its listener opens and closes).
pub fn churn_loop(
    ctl: &dyn Fn(&[&str]) -> bool,
    port: u16,
    other_port: u16,
    files: &std::path::Path,
    stop: &AtomicBool,
    tally: &Tally,
) {
    let base = format!("{}://+:{port}/", crate::tls::scheme());
    let file = |name: &str| files.join(name).to_string_lossy().into_owned();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let stable = file(&format!("stable{}", round % 2));
        let extra = format!("{}://+:{port}/extra{round}/", crate::tls::scheme());
        let other = format!("http://+:{other_port}/");
        let commands: [Vec<String>; 8] = [
            vec![
                "cache".into(),
                "put".into(),
                format!("{base}churn/stable"),
                stable,
            ],
            vec![
                "cache".into(),
                "put".into(),
                format!("{base}churn/toggle"),
                file("toggle"),
            ],
            vec![
                "cache".into(),
                "delete".into(),
                format!("{base}churn/toggle"),
            ],
            vec!["cache".into(), "flush".into(), format!("{base}flush/")],
            vec![
                "cache".into(),
                "put".into(),
                format!("{base}flush/x"),
                file("flushed"),
            ],
            vec!["urlacl".into(), "add".into(), extra.clone()],
            vec!["urlacl".into(), "delete".into(), extra],
            vec![
                "urlacl".into(),
                if round.is_multiple_of(2) {
                    "add"
                } else {
                    "delete"
                }
                .into(),
                other,
            ],
        ];
        for c in &commands {
            let c: Vec<&str> = c.iter().map(String::as_str).collect();
            tally.control_commands.fetch_add(1, Ordering::Relaxed);
            if !ctl(&c) {
                tally.error(format!("khttpctl {} failed", c.join(" ")));
            }
        }
        round = round.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Leave the other port released.
    if round % 2 == 1 {
        let _ = ctl(&["urlacl", "delete", &format!("http://+:{other_port}/")]);
    }
}

/// Writes the churn bodies as files under `dir` for [`churn_loop`].
///
/// # Errors
/// The write error.
pub fn write_churn_files(set: &ChurnSet, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("stable0"), &set.stable[0])?;
    std::fs::write(dir.join("stable1"), &set.stable[1])?;
    std::fs::write(dir.join("toggle"), &set.toggle)?;
    std::fs::write(dir.join("flushed"), &set.flushed)
}

/// A process's resident memory in KiB (`VmRSS`) and its open descriptors, from `/proc`.
#[must_use]
pub fn rss_kib_and_fds(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}
