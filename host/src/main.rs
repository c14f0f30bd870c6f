//! khttpd: the khttp engine on Linux (docs/operating.md, "khttpd").
//!
//! `khttpd [--state-dir DIR] [--control PATH] [--iplisten ADDR]... [--workers N]
//!         [--site DIR [--prefix PREFIX] [--https]] [--access-log PATH] [--sendfile on|off]
//!         [--tls-provider ring|khttp-crypto]`
//!
//! Listens on the ports that reservations name, on the IP-listen addresses (all when the list is
//! empty); reloads persisted reservations, limits and the IP list; serves the control socket
//! (mode 0600); stops cleanly on SIGINT/SIGTERM. The only unsafe code is in [`sys`].

#[allow(
    unsafe_code,
    reason = "the host's syscall module; each block has its SAFETY comment"
)]
mod sys;

mod appqueue;
mod apps;
mod bodies;
mod control;
mod localca;
mod log;
mod notify;
mod shared;
mod sockdir;
mod state;
mod tls;
mod worker;
mod x509;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Parser;
use khttp_engine::EntrySpec;
use khttp_engine::Site;
use khttp_local::files;

use crate::shared::Shared;

/// The system's allocator, with a cushion for the calls into rustls (see [`sys::Cushioned`]).
#[global_allocator]
static ALLOCATOR: sys::Cushioned = sys::Cushioned;
use crate::worker::{Worker, bind_listener, wanted_addrs};

/// The khttp HTTP accelerator, in user mode.
#[derive(Parser, Debug)]
#[command(name = "khttpd", version)]
struct Args {
    /// Where reservations, the IP listen list and limits persist
    /// [default: /var/lib/khttp as root, else $XDG_STATE_HOME/khttp or ~/.local/state/khttp].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The control socket [default: /run/khttp/control.sock as root, else
    /// $XDG_RUNTIME_DIR/khttp/control.sock or /tmp/khttp-UID/control.sock].
    #[arg(long)]
    control: Option<PathBuf>,
    /// Add an address to the IP listen list (persisted, like `khttpctl iplisten add`).
    #[arg(long)]
    iplisten: Vec<String>,
    /// Worker threads [default: the number of CPUs].
    #[arg(long)]
    workers: Option<usize>,
    /// Serve this directory: reserve --prefix and load every file under it.
    #[arg(long)]
    site: Option<PathBuf>,
    /// The freshness policy --site gives its prefix: `Cache-Control: max-age=SECONDS` on
    /// every file served (0: none).
    #[arg(long, default_value_t = 60, requires = "site")]
    max_age: u64,
    /// The URL prefix for --site [default: http://+:8080/, or https://+:8443/ with --https].
    #[arg(long, requires = "site")]
    prefix: Option<String>,
    /// Serve --site over https, with a certificate for localhost from khttp's local CA (made
    /// in STATE_DIR/ca on first use; `khttpctl sslcert ca` prints it for clients to trust),
    /// unless a certificate is already bound to the port.
    #[arg(long, requires = "site")]
    https: bool,
    /// The TLS crypto provider: ring, or khttp-crypto, the driver's provider in safe Rust
    /// (ECDSA certificates only; docs/tls.md), to try it in user mode.
    #[arg(long, value_enum, default_value = "ring")]
    tls_provider: tls::Provider,
    /// The application endpoint, which any local user may open: applications attach to
    /// request queues here (`khttp-app`, `khttp-proxy`) [default: app.sock beside the control
    /// socket].
    #[arg(long)]
    app_socket: Option<PathBuf>,
    /// Write one line per request here: time, client, method, URL, status, bytes, HIT/MISS, duration.
    #[arg(long)]
    access_log: Option<PathBuf>,
    /// The access log's format: w3c (http.sys's W3C extended, with its #Fields header),
    /// combined (nginx's) or json (one object per line). SIGHUP or `khttpctl log reopen`
    /// reopens the file, for logrotate.
    #[arg(long, default_value = "w3c", requires = "access_log")]
    log_format: log::Format,
    /// Apply this file at start, as `khttpctl apply FILE` would (reservations, listen
    /// addresses, limits, content); a fault in it stops khttpd with its file, line and field.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With --config: also remove what the file does not declare (`khttpctl apply --prune`).
    #[arg(long, requires = "config")]
    prune: bool,
    /// Print khttpd's man page or a shell's completion script, and exit (for packagers).
    #[arg(long, hide = true, value_name = "KIND", value_parser = khttp_local::admin::generate::KINDS)]
    generate: Option<String>,
    /// Send large cached bodies with sendfile(2) from sealed memfds ("on"), or with writev from
    /// the cache ("off"), like nginx's `sendfile` directive.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    sendfile: String,
}

fn default_state_dir() -> PathBuf {
    if sys::euid() == 0 {
        return PathBuf::from("/var/lib/khttp");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("khttp");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/khttp")
}

/// Loads `dir` into `site` under `prefix`; returns (files, bytes).
fn load_site(
    site: &mut Site,
    dir: &Path,
    prefix: &str,
    now: khttp_engine::Instant,
) -> Result<(usize, u64), String> {
    let list =
        files::walk(dir, prefix).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut bytes = 0u64;
    for f in &list {
        let data =
            std::fs::read(&f.path).map_err(|e| format!("cannot read {}: {e}", f.path.display()))?;
        for url in &f.urls {
            let spec = EntrySpec {
                content_type: &f.content_type,
                body: data.clone(),
                last_modified: f.mtime,
                ..EntrySpec::default()
            };
            site.put(url, spec, now)
                .map_err(|e| format!("{url}: {e}"))?;
        }
        bytes += data.len() as u64;
    }
    Ok((list.len(), bytes))
}

/// The URL a person can open for `prefix`.
fn browsable(prefix: &str) -> String {
    let (scheme, rest) = match prefix.strip_prefix("https://") {
        Some(rest) => ("https", rest),
        None => ("http", prefix.strip_prefix("http://").unwrap_or(prefix)),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (name, port) = host
        .rsplit_once(':')
        .unwrap_or((host, if scheme == "https" { "443" } else { "80" }));
    let name = if name == "+" || name == "*" {
        "localhost"
    } else {
        name
    };
    format!("{scheme}://{name}:{port}{path}")
}

impl Args {
    /// `--prefix`, or its default for `--https` or not.
    fn prefix(&self) -> &str {
        match &self.prefix {
            Some(p) => p,
            None if self.https => "https://+:8443/",
            None => "http://+:8080/",
        }
    }
}

/// The site khttpd starts with: the persisted state, then `--iplisten` and `--site`; saved
/// again if they changed it. Also returns the line announcing `--site`.
fn prepare_site(args: &Args, state_dir: &Path) -> Result<(Site, Option<String>), String> {
    let mut site = Site::new();
    site.enable_tls();
    state::load(state_dir, &mut site)?;
    let mut persist = false;
    for addr in &args.iplisten {
        match site.iplisten_add(addr) {
            Ok(_) => persist = true,
            Err(khttp_engine::CtlError::AddressExists) => {}
            Err(e) => return Err(format!("--iplisten {addr}: {e}")),
        }
    }
    let clock0 = khttp_engine::Clock::new(khttp_engine::Instant(0), 0);
    let mut site_line = None;
    if let Some(dir) = &args.site {
        let prefix = args.prefix();
        if args.https && !prefix.starts_with("https://") {
            return Err(format!("--https needs an https:// --prefix, not {prefix}"));
        }
        match site.reserve(prefix, None) {
            Ok(_) => persist = true,
            Err(khttp_engine::CtlError::AlreadyExists) => {}
            Err(e) => return Err(format!("--prefix {prefix}: {e}")),
        }
        let policy = (args.max_age > 0).then(|| format!("max-age={}", args.max_age));
        site.set_policy(prefix, policy.as_deref())
            .map_err(|e| format!("--max-age: {e}"))?;
        let (n, bytes) = load_site(&mut site, dir, prefix, clock0.now())?;
        site_line = Some(format!(
            "khttpd: serving {} ({n} files, {bytes} bytes) at {}",
            dir.display(),
            browsable(prefix)
        ));
    }
    if persist {
        state::save(state_dir, &site)
            .map_err(|e| format!("cannot save state in {}: {e}", state_dir.display()))?;
    }
    Ok((site, site_line))
}

/// `--https`: a certificate from the local CA for the prefix's port, unless one is bound to it
/// already; and, for every https port, a warning when no certificate covers it. Returns the
/// lines to print.
fn tls_setup(args: &Args, site: &Site, certs: &tls::Certs) -> Result<Vec<String>, String> {
    use khttp_engine::tls::bind::BindingKey;
    let mut lines = Vec::new();
    if args.https {
        let prefix = khttp_engine::parse_prefix(args.prefix()).map_err(|e| e.to_string())?;
        let port = prefix.port;
        if certs.bindings().covers(port) {
            lines.push(format!(
                "khttpd: --https: port {port} has a certificate bound already (khttpctl sslcert show)"
            ));
        } else {
            let host = prefix.to_text().ok().and_then(|t| {
                let rest = t.strip_prefix("https://")?;
                let host = rest.rsplit_once(':')?.0;
                (host != "+" && host != "*").then(|| {
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned()
                })
            });
            let cert = localca::issue(&certs.ca_dir, host.as_slice(), certs.provider())?;
            let wildcard = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            certs.bind_transient(BindingKey::IpPort(wildcard, port), cert);
            let ca = certs.ca_dir.join("ca.pem");
            lines.push(format!(
                "khttpd: https on port {port} with a certificate for localhost from khttp's local \
                 CA, {}; trust it with `curl --cacert {}`, or print it with `khttpctl sslcert ca`",
                ca.display(),
                ca.display()
            ));
        }
    }
    let ports = site.namespace().ports().unwrap_or_default();
    let bindings = certs.bindings();
    for port in ports.into_iter().filter(|p| site.serves_tls(*p)) {
        if !bindings.covers(port) {
            lines.push(format!(
                "khttpd: warning: no certificate is bound to port {port}, so its handshakes are \
                 refused: khttpctl sslcert add ipport=0.0.0.0:{port} --cert CHAIN.pem --key KEY.pem"
            ));
        }
    }
    Ok(lines)
}

/// The sockets khttpd made, removed however it ends.
struct RemoveOnDrop([PathBuf; 2]);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `--config FILE`: the file applied through the control path, in process, before anything
/// listens; returns the summary line.
fn apply_config(shared: &Shared, file: &Path, prune: bool) -> Result<String, String> {
    use khttp_local::admin::{config::Config, plan};
    let cfg = Config::load(file).map_err(|e| e.to_string())?;
    let mut ctl = control::InProcess(shared);
    let plan = plan::plan(&cfg, &mut ctl, prune).map_err(|e| e.to_string())?;
    plan::apply(&cfg, &plan, &mut ctl, &mut |step| {
        println!("khttpd: {step}")
    })
    .map_err(|e| e.to_string())?;
    Ok(format!("khttpd: {}", plan.summary(&cfg.file, true)))
}

/// Listeners per worker, and the addresses bound.
type Bound = (
    Vec<Vec<(SocketAddr, mio::net::TcpListener)>>,
    Vec<SocketAddr>,
);

/// Binds every address the site names, once per worker (SO_REUSEPORT), before anything starts,
/// so that a port in use is a clear error now. An IPv6 wildcard on a host without IPv6 is
/// skipped.
fn bind_all(site: &Site, workers: usize) -> Result<Bound, String> {
    let addrs = wanted_addrs(site).ok_or("out of memory")?;
    let mut per_worker: Vec<Vec<(SocketAddr, mio::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for addr in &addrs {
        let mut ok = true;
        for listeners in &mut per_worker {
            match bind_listener(*addr) {
                Ok(l) => listeners.push((*addr, l)),
                Err(e) => {
                    if addr.is_ipv6()
                        && addr.ip().is_unspecified()
                        && addrs.iter().any(|a| a.port() == addr.port() && a.is_ipv4())
                    {
                        ok = false;
                        break;
                    }
                    return Err(format!("cannot listen on {addr}: {e}"));
                }
            }
        }
        if ok {
            bound.push(*addr);
        } else {
            for listeners in &mut per_worker {
                listeners.retain(|(a, _)| a != addr);
            }
        }
    }
    Ok((per_worker, bound))
}

/// Serves until SIGINT or SIGTERM; SIGHUP, logrotate's signal, reopens the access log.
fn wait_for_stop(signals: &mut signal_hook::iterator::Signals, shared: &Shared) {
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            if let Err(e) = shared.reopen_log() {
                eprintln!("khttpd: {e}");
            }
            continue;
        }
        println!("khttpd: signal {sig}: finishing responses in flight");
        notify::notify("STOPPING=1");
        return;
    }
}

/// Starts the workers (their handles, to join at the end), the control thread, the
/// application endpoint's thread and the janitor.
fn spawn_threads(
    shared: &Arc<Shared>,
    per_worker: Vec<Vec<(SocketAddr, mio::net::TcpListener)>>,
    control: std::os::unix::net::UnixListener,
    app_listener: std::os::unix::net::UnixListener,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let mut threads = Vec::new();
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let w = Worker::new(Arc::clone(shared), listeners, i == 0)
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("khttpd-worker-{i}"))
                .spawn(move || w.run())
                .map_err(|e| e.to_string())?,
        );
    }
    {
        let s = Arc::clone(shared);
        std::thread::Builder::new()
            .name("khttpd-control".into())
            .spawn(move || control::serve(&control, &s))
            .map_err(|e| e.to_string())?;
        let s = Arc::clone(shared);
        std::thread::Builder::new()
            .name("khttpd-apps".into())
            .spawn(move || apps::serve(&app_listener, &s))
            .map_err(|e| e.to_string())?;
        let s = Arc::clone(shared);
        std::thread::Builder::new()
            .name("khttpd-janitor".into())
            .spawn(move || control::janitor(&s))
            .map_err(|e| e.to_string())?;
    }
    Ok(threads)
}

/// Prints where khttpd listens, its sockets and its state.
fn announce(
    site: &Site,
    bound: &[SocketAddr],
    (app_path, control_path): (&Path, &Path),
    state_dir: &Path,
    workers: usize,
) {
    for addr in bound {
        println!("khttpd: listening on {}", worker::url_of(site, *addr));
    }
    if bound.is_empty() {
        println!(
            "khttpd: no URL reservations yet: nothing to listen on (add one with khttpctl urlacl add)"
        );
    }
    println!("khttpd: application socket {}", app_path.display());
    println!(
        "khttpd: control socket {} (khttpctl --endpoint unix:{})",
        control_path.display(),
        control_path.display()
    );
    println!(
        "khttpd: state in {}; {workers} worker(s)",
        state_dir.display()
    );
}

fn run(args: Args) -> Result<(), String> {
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let control_path = args
        .control
        .clone()
        .unwrap_or_else(khttp_local::socket::default_server_socket);
    // The control socket first: a second khttpd stops here, before it touches the state.
    let control = control::bind(&control_path)?;
    let app_path = args
        .app_socket
        .clone()
        .unwrap_or_else(|| control_path.with_file_name("app.sock"));
    let app_listener = apps::bind(&app_path)?;
    let _sockets = RemoveOnDrop([control_path.clone(), app_path.clone()]);
    let (site, site_line) = prepare_site(&args, &state_dir)?;
    let access_log = match &args.access_log {
        Some(p) => Some(log::AccessLog::open(p, args.log_format)?),
        None => None,
    };
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
        .max(1);
    let certs = tls::Certs::load(&state_dir, args.tls_provider)?;
    let https_lines = tls_setup(&args, &site, &certs)?;
    let mut shared = Shared::new(site, state_dir.clone(), access_log, certs);
    shared.sendfile = args.sendfile == "on";
    let config_line = match &args.config {
        Some(file) => Some(apply_config(&shared, file, args.prune)?),
        None => None,
    };
    let (per_worker, bound) = bind_all(&shared.snapshot(), workers)?;
    let shared = Arc::new(shared);

    let threads = spawn_threads(&shared, per_worker, control, app_listener)?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let sockets = (app_path.as_path(), control_path.as_path());
    announce(&shared.snapshot(), &bound, sockets, &state_dir, workers);
    for line in site_line.iter().chain(&config_line).chain(&https_lines) {
        println!("{line}");
    }

    notify::notify("READY=1");
    wait_for_stop(&mut signals, &shared);
    shared.shutdown.store(true, Ordering::Release);
    shared.wake_all();
    // Unblock the control thread's accept.
    let _ = std::os::unix::net::UnixStream::connect(&control_path);
    let _ = std::os::unix::net::UnixStream::connect(&app_path);
    for t in threads {
        let _ = t.join();
    }
    println!("khttpd: stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(kind) = &args.generate {
        use clap::CommandFactory;
        let mut out = std::io::stdout().lock();
        return match khttp_local::admin::generate::generate(Args::command(), kind, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("khttpd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("khttpd: {e}");
            ExitCode::FAILURE
        }
    }
}
