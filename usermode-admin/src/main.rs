//! khttpctl: the khttp admin CLI. Every failure prints one line and exits non-zero.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[cfg(unix)]
mod acme;

use clap::{Args, Parser, Subcommand};
use khttp_local::admin::config::Config;
use khttp_local::admin::plan::{self, Plan};
use khttp_local::admin::put::{self, LocalFile, PutOptions, put_file};
use khttp_local::compress::Coding;
use khttp_local::files;
use khttp_proto::Request;
use khttp_proto::reply::{
    AddressRow, CertRow, CounterRow, EntryRow, FlushRow, LimitRow, PemRow, QueueRow,
    ReservationRow, VersionRow,
};
use khttpctl::endpoint::{Client, Endpoint, Reply, default_endpoint};
use serde_json::{Value as Json, json};

/// Administer khttp: URL reservations, the IP listen list, the response cache, limits,
/// request queues, the access log, and whole configurations declared in a file (apply).
#[derive(Parser, Debug)]
#[command(name = "khttpctl", version)]
struct Cli {
    /// Control endpoint: unix:PATH (khttpd) or device:\\.\KHttp (the driver).
    /// Default: $KHTTP_ENDPOINT, else the platform default.
    #[arg(long, global = true)]
    endpoint: Option<Endpoint>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// URL reservations (http.sys urlacl).
    #[command(subcommand)]
    Urlacl(Urlacl),
    /// The addresses khttp listens on (empty: all).
    #[command(subcommand)]
    Iplisten(Iplisten),
    /// The response cache.
    #[command(subcommand)]
    Cache(Cache),
    /// Counters.
    Stats(JsonFlag),
    /// Limits and timeouts.
    #[command(subcommand)]
    Limits(Limits),
    /// Request queues: applications that answer the requests the cache cannot.
    #[command(subcommand)]
    Queue(Queue),
    /// The access log.
    #[command(subcommand)]
    Log(Log),
    /// TLS certificates bound to addresses and host names, for https:// reservations (http.sys
    /// sslcert).
    #[command(subcommand)]
    Sslcert(Sslcert),
    /// Make the server hold what FILE declares (TOML: reservations, listen addresses, limits,
    /// content). Only differences are sent: run twice, the second run changes nothing.
    Apply {
        /// The file (see docs/apply.md; an example is examples/khttp.toml).
        file: PathBuf,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove what FILE does not declare: cache entries, listen addresses and
        /// reservations (limits keep their values).
        #[arg(long)]
        prune: bool,
    },
    /// Protocol and server version.
    Version,
    /// Print khttpctl's man page or a shell's completion script (for packagers); `man DIR`
    /// writes every page, the subcommands' too, into DIR.
    #[command(hide = true)]
    Generate {
        /// man, bash, zsh or fish.
        #[arg(value_parser = khttp_local::admin::generate::KINDS)]
        kind: String,
        /// With `man`: the directory for every page.
        dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Urlacl {
    /// Reserve a URL prefix, e.g. http://+:8080/site/
    Add {
        prefix: String,
        /// The user who may register under it (on Windows, looked up and sent as its SID).
        #[arg(long, conflicts_with = "sddl")]
        user: Option<String>,
        /// An SDDL string, e.g. D:(A;;GX;;;WD)
        #[arg(long)]
        sddl: Option<String>,
        #[command(flatten)]
        fresh: Freshness,
    },
    /// Delete a reservation and its cache entries.
    Delete { prefix: String },
    /// List reservations.
    Show(JsonFlag),
}

#[derive(Subcommand, Debug)]
enum Sslcert {
    /// Bind a certificate and its key: ipport=IP:PORT (ipport=0.0.0.0:PORT for every address
    /// of the port) or hostnameport=NAME:PORT (chosen by the name the client asks for, SNI).
    /// Replaces what was bound there; handshakes already made keep theirs.
    Add {
        /// ipport=IP:PORT, ipport=[IPv6]:PORT or hostnameport=NAME:PORT
        binding: String,
        /// The certificate chain, PEM, the server's certificate first.
        #[arg(long, value_name = "CHAIN.pem")]
        cert: PathBuf,
        /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1; ECDSA P-256, P-384 or RSA).
        #[arg(long, value_name = "KEY.pem")]
        key: PathBuf,
        /// An OCSP response for the certificate (DER, as `openssl ocsp -respout` writes it),
        /// stapled to handshakes; add again with a fresh one before it expires.
        #[arg(long, value_name = "RESPONSE.der")]
        ocsp: Option<PathBuf>,
    },
    /// Remove a binding.
    Delete {
        /// ipport=IP:PORT or hostnameport=NAME:PORT
        binding: String,
    },
    /// List bindings.
    Show(JsonFlag),
    /// Print the certificate of khttpd's local CA (what `khttpd --https` issues from), for
    /// clients to trust.
    Ca,
    /// Get a certificate for NAME from an ACME CA (Let's Encrypt, or any RFC 8555 server) and
    /// bind it to hostnameport=NAME:PORT. The CA checks the name with http-01: it must reach
    /// http://NAME:HTTP-PORT/.well-known/acme-challenge/ on this server, which answers from its
    /// cache. Recorded for `sslcert renew`.
    Acme {
        /// hostnameport=NAME:PORT
        binding: String,
        /// The CA's directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory
        #[arg(long)]
        directory: String,
        /// A contact address for the ACME account.
        #[arg(long)]
        email: Option<String>,
        /// The port the CA connects to for http-01.
        #[arg(long, default_value_t = 80)]
        http_port: u16,
        /// Trust this CA certificate (PEM) for the directory's HTTPS instead of the system's
        /// (a test CA such as Pebble's).
        #[arg(long, value_name = "CA.pem")]
        acme_root: Option<PathBuf>,
        /// Where the account key and the records for renewal are kept (mode 0700)
        /// [default: /var/lib/khttp/acme as root, else $XDG_STATE_HOME/khttp/acme].
        #[arg(long, value_name = "DIR")]
        acme_dir: Option<PathBuf>,
    },
    /// Get again every certificate `sslcert acme` obtained that expires within DAYS days (or
    /// is no longer bound); dist/ has a systemd timer that runs it daily.
    Renew {
        /// Renew certificates with fewer days than this left.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// As for `sslcert acme`.
        #[arg(long, value_name = "DIR")]
        acme_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum Iplisten {
    /// Add an address.
    Add { addr: String },
    /// Delete an address.
    Delete { addr: String },
    /// List addresses.
    Show(JsonFlag),
}

/// A freshness policy: the `Cache-Control` responses are sent with (issue #13). On a
/// reservation it applies to every entry under it that has none of its own.
#[derive(Args, Debug, Default)]
#[group(multiple = false)]
struct Freshness {
    /// Clients and caches may keep responses this many seconds (`Cache-Control: max-age=N`).
    #[arg(long, value_name = "SECONDS")]
    max_age: Option<u64>,
    /// Clients must revalidate every time (`Cache-Control: no-cache`).
    #[arg(long)]
    no_cache: bool,
    /// Responses never change at this URL (`Cache-Control: max-age=31536000, immutable`).
    #[arg(long)]
    immutable: bool,
}

impl Freshness {
    /// The `Cache-Control` value, if a policy was given.
    fn value(&self) -> Option<String> {
        if let Some(n) = self.max_age {
            Some(format!("max-age={n}"))
        } else if self.no_cache {
            Some("no-cache".into())
        } else if self.immutable {
            Some("max-age=31536000, immutable".into())
        } else {
            None
        }
    }
}

#[derive(Args, Debug)]
struct LoadOpts {
    /// Seconds until the entries expire.
    #[arg(long)]
    ttl: Option<u64>,
    /// Also store compressed variants: gzip, br or gzip,br.
    #[arg(long, value_delimiter = ',')]
    compress: Vec<String>,
    #[command(flatten)]
    fresh: Freshness,
}

#[derive(Subcommand, Debug)]
enum Cache {
    /// Put FILE at URL.
    Put {
        url: String,
        file: PathBuf,
        /// Content-Type (default: from the file extension).
        #[arg(long)]
        content_type: Option<String>,
        /// Status code to serve it with (default 200).
        #[arg(long)]
        status: Option<u16>,
        /// An extra response header, "Name: value"; repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        #[command(flatten)]
        opts: LoadOpts,
    },
    /// Put every file under DIR at PREFIX + its relative path.
    Load {
        dir: PathBuf,
        #[arg(long)]
        prefix: String,
        #[command(flatten)]
        opts: LoadOpts,
    },
    /// Delete the entry at URL.
    Delete { url: String },
    /// Delete every entry under PREFIX, or all.
    Flush { prefix: Option<String> },
    /// List entries under PREFIX, or all.
    Show {
        prefix: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Log {
    /// Reopen the access log at its path (after logrotate moved it), as SIGHUP does.
    Reopen,
}

#[derive(Subcommand, Debug)]
enum Queue {
    /// List queues: their prefixes and the applications attached.
    Show(JsonFlag),
}

#[derive(Subcommand, Debug)]
enum Limits {
    /// Show every limit.
    Show(JsonFlag),
    /// Set one limit.
    Set { name: String, value: String },
}

/// A failure: one line of English.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

fn codings(names: &[String]) -> Result<Vec<Coding>, Fail> {
    put::codings(names).map_err(|e| Fail(format!("--compress: {e}")))
}

fn read_file(path: &Path) -> Result<(Vec<u8>, Option<u64>), Fail> {
    let data =
        std::fs::read(path).map_err(|e| Fail(format!("cannot read {}: {e}", path.display())))?;
    let mtime = std::fs::metadata(path)
        .ok()
        .as_ref()
        .and_then(files::mtime_of);
    Ok((data, mtime))
}

/// Prints a line; a closed pipe (`khttpctl cache show | head`) ends the program quietly.
fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{args}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

macro_rules! out {
    ($($t:tt)*) => { emit(format_args!($($t)*)) };
}

fn print_json(v: &Json) {
    out!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints `{"name": value, ...}`: `stats --json`, `limits show --json`.
fn print_json_map<'a>(pairs: impl Iterator<Item = (&'a str, u64)>) {
    print_json(&Json::Object(
        pairs.map(|(k, v)| (k.to_string(), json!(v))).collect(),
    ));
}

fn run(cli: Cli) -> Result<(), Fail> {
    if let Command::Generate { kind, dir } = &cli.command {
        use clap::CommandFactory;
        use khttp_local::admin::generate::{generate, man_pages};
        if let (Some(dir), "man") = (dir, kind.as_str()) {
            man_pages(Cli::command(), dir)
                .map_err(|e| Fail(format!("cannot write into {}: {e}", dir.display())))?;
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        return Ok(generate(Cli::command(), kind, &mut out)?);
    }
    let endpoint = cli.endpoint.unwrap_or_else(default_endpoint);
    let mut client = Client::connect(&endpoint)?;
    match cli.command {
        Command::Version => {
            let reply = client.call(&Request::Version, &[])?;
            let v: VersionRow<'_> = reply.row()?;
            out!("khttpctl {}", env!("CARGO_PKG_VERSION"));
            out!("server {} (control protocol {})", v.engine, v.protocol);
            Ok(())
        }
        Command::Urlacl(c) => urlacl(&mut client, c),
        Command::Iplisten(c) => iplisten(&mut client, c),
        Command::Cache(c) => cache(&mut client, c),
        Command::Stats(j) => stats(&mut client, j.json),
        Command::Limits(c) => limits(&mut client, c),
        Command::Queue(Queue::Show(j)) => queues(&mut client, j.json),
        Command::Apply {
            file,
            dry_run,
            prune,
        } => apply(&mut client, &file, dry_run, prune),
        Command::Generate { .. } => Ok(()),
        Command::Sslcert(c) => sslcert(&mut client, c),
        Command::Log(Log::Reopen) => {
            change(&mut client, "log reopen", &Request::LogReopen)?;
            out!("Access log reopened");
            Ok(())
        }
    }
}

/// `apply FILE`: the plan, printed step by step as it is made (or only printed).
fn apply(client: &mut Client, file: &Path, dry_run: bool, prune: bool) -> Result<(), Fail> {
    let cfg = Config::load(file)?;
    let plan: Plan = plan::plan(&cfg, client, prune)?;
    if dry_run {
        for step in &plan.steps {
            out!("{step}");
        }
    } else {
        plan::apply(&cfg, &plan, client, &mut |step| out!("{step}"))?;
    }
    out!("{}", plan.summary(&cfg.file, !dry_run));
    Ok(())
}

fn queues(client: &mut Client, as_json: bool) -> Result<(), Fail> {
    let reply = client.call(&Request::QueueList, &[])?;
    let rows: Vec<QueueRow<'_>> = reply.rows()?;
    if as_json {
        let list = rows
            .iter()
            .map(|q| {
                let prefixes: Vec<&str> = q.prefixes.split(' ').filter(|p| !p.is_empty()).collect();
                let processes: Vec<&str> =
                    q.processes.split(' ').filter(|p| !p.is_empty()).collect();
                json!({
                    "id": q.id, "name": q.name, "owner": q.owner, "prefixes": prefixes,
                    "processes": processes,
                    "attached": processes.len(), "in_flight": q.in_flight, "requests": q.requests,
                    "answered": q.answered, "refused": q.refused, "abandoned": q.abandoned,
                    "timed_out": q.timed_out,
                })
            })
            .collect();
        print_json(&Json::Array(list));
    } else if rows.is_empty() {
        out!("No request queues.");
    }
    for q in rows.iter().filter(|_| !as_json) {
        out!("Request queue {} (id {})", q.name, q.id);
        out!("    Owner: {}", khttp_local::admin::account::owner(q.owner));
        for p in q.prefixes.split(' ').filter(|p| !p.is_empty()) {
            out!("    URL: {p}");
        }
        let processes: Vec<&str> = q.processes.split(' ').filter(|p| !p.is_empty()).collect();
        out!("    Applications attached: {}", processes.len());
        for p in &processes {
            let (pid, uid) = p.split_once(':').unwrap_or((p, "?"));
            // The driver gives the last part of the user's SID, its relative id (RID).
            let user = if cfg!(windows) { "user RID" } else { "uid" };
            out!("        Process {pid} ({user} {uid})");
        }
        out!("    Requests waiting or in progress: {}", q.in_flight);
        out!(
            "    Requests: {} handed over, {} answered, {} refused, {} abandoned, {} timed out",
            q.requests,
            q.answered,
            q.refused,
            q.abandoned,
            q.timed_out
        );
    }
    Ok(())
}

/// Reads a PEM file for `sslcert add`.
fn read_pem(path: &Path) -> Result<String, Fail> {
    let bytes =
        std::fs::read(path).map_err(|e| Fail(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|_| Fail(format!("{} is not PEM text", path.display())))
}

fn sslcert(client: &mut Client, c: Sslcert) -> Result<(), Fail> {
    match c {
        Sslcert::Add {
            binding,
            cert,
            key,
            ocsp,
        } => {
            let (chain, key) = (read_pem(&cert)?, read_pem(&key)?);
            let ocsp = match &ocsp {
                Some(p) => Some(
                    std::fs::read(p)
                        .map_err(|e| Fail(format!("cannot read {}: {e}", p.display())))?,
                ),
                None => None,
            };
            let req = Request::SslcertAdd {
                binding: &binding,
                chain: &chain,
                key: &key,
                ocsp: ocsp.as_deref(),
            };
            let sent = change(client, &binding, &req);
            files::wipe(key.into_bytes());
            sent?;
            out!("SSL certificate added: {binding}");
        }
        Sslcert::Delete { binding } => {
            change(
                client,
                &binding,
                &Request::SslcertDelete { binding: &binding },
            )?;
            out!("SSL certificate deleted: {binding}");
        }
        Sslcert::Show(j) => sslcert_show(client, j.json)?,
        #[cfg(unix)]
        Sslcert::Acme {
            binding,
            directory,
            email,
            http_port,
            acme_root,
            acme_dir,
        } => {
            let options = acme::Options {
                directory,
                email,
                http_port,
                root: acme_root,
            };
            let dir = acme_dir.unwrap_or_else(acme::default_dir);
            acme::obtain(client, &binding, &options, &dir)?;
            out!("SSL certificate obtained and added: {binding}");
        }
        #[cfg(unix)]
        Sslcert::Renew { days, acme_dir } => {
            let dir = acme_dir.unwrap_or_else(acme::default_dir);
            let done = acme::renew(client, &dir, days)?;
            if done.is_empty() {
                out!("No certificates from ACME to renew.");
            }
            for line in done {
                out!("{line}");
            }
        }
        #[cfg(not(unix))]
        Sslcert::Acme { .. } | Sslcert::Renew { .. } => {
            return Err(Fail(
                "ACME runs in khttpctl on Linux for now (the driver has no TLS yet)".into(),
            ));
        }
        Sslcert::Ca => {
            let reply = client.call(&Request::SslcertCa, &[])?;
            let row: PemRow<'_> = reply.row()?;
            out!("{}", row.pem.trim_end());
        }
    }
    Ok(())
}

/// `sslcert show`: one block per binding, or JSON.
fn sslcert_show(client: &mut Client, as_json: bool) -> Result<(), Fail> {
    let reply = client.call(&Request::SslcertList, &[])?;
    let rows: Vec<CertRow<'_>> = reply.rows()?;
    let expires = |r: &CertRow<'_>| {
        r.not_after.map(|t| {
            String::from_utf8_lossy(khttp_engine::HttpDate::from_unix(t).as_bytes()).into_owned()
        })
    };
    if as_json {
        let list = rows
            .iter()
            .map(|r| {
                let names: Vec<&str> = r.names.split(',').filter(|n| !n.is_empty()).collect();
                json!({
                    "binding": r.binding, "sha256": r.sha256, "names": names,
                    "not_after": r.not_after, "expires": expires(r), "chain": r.chain,
                    "persisted": r.persisted,
                })
            })
            .collect();
        print_json(&Json::Array(list));
        return Ok(());
    }
    if rows.is_empty() {
        out!("No SSL certificate bindings.");
    }
    for r in &rows {
        out!("{}", r.binding);
        out!("    Certificate (SHA-256): {}", r.sha256);
        out!("    Names:                 {}", r.names.replace(',', ", "));
        out!(
            "    Expires:               {}",
            expires(r).as_deref().unwrap_or("unknown")
        );
        out!("    Chain:                 {} certificate(s)", r.chain);
        let kept = if r.persisted {
            "yes"
        } else {
            "no (this run only: --https)"
        };
        out!("    Persisted:             {kept}");
    }
    Ok(())
}

/// A change whose refusal names what it was about: `SUBJECT: why`.
fn change(client: &mut Client, subject: &str, req: &Request<'_>) -> Result<Reply, Fail> {
    client
        .call(req, &[])
        .map_err(|e| Fail(format!("{subject}: {e}")))
}

fn urlacl(client: &mut Client, c: Urlacl) -> Result<(), Fail> {
    match c {
        Urlacl::Add {
            prefix,
            user,
            sddl,
            fresh,
        } => {
            let acl = match (user, sddl) {
                (Some(u), _) => Some(
                    khttp_local::admin::account::user_acl(&u)
                        .map_err(|e| Fail(format!("{prefix}: {e}")))?,
                ),
                (None, s) => s.map(|s| format!("sddl:{s}")),
            };
            let acl = acl.as_deref();
            let policy = fresh.value();
            change(
                client,
                &prefix,
                &Request::UrlaclAdd {
                    prefix: &prefix,
                    acl,
                    cache_control: policy.as_deref(),
                },
            )?;
            out!("URL reservation added: {prefix}");
        }
        Urlacl::Delete { prefix } => {
            change(client, &prefix, &Request::UrlaclDelete { prefix: &prefix })?;
            out!("URL reservation deleted: {prefix}");
        }
        Urlacl::Show(j) => {
            let reply = client.call(&Request::UrlaclList, &[])?;
            let rows: Vec<ReservationRow<'_>> = reply.rows()?;
            if j.json {
                let list = rows
                    .iter()
                    .map(|r| json!({"prefix": r.prefix, "acl": r.acl, "cache_control": r.cache_control}))
                    .collect();
                print_json(&Json::Array(list));
            } else if rows.is_empty() {
                out!("No URL reservations.");
            }
            for r in rows.iter().filter(|_| !j.json) {
                out!("    Reserved URL : {}", r.prefix);
                match r.acl.and_then(|a| a.split_once(':')) {
                    Some(("user", u)) => out!("        User: {u}"),
                    Some(("sddl", s)) => {
                        for line in khttp_local::admin::account::describe(r.acl.unwrap_or_default())
                        {
                            out!("        {line}");
                        }
                        out!("        SDDL: {s}");
                    }
                    _ => {}
                }
                if let Some(v) = r.cache_control {
                    out!("        Cache-Control: {v}");
                }
            }
        }
    }
    Ok(())
}

fn iplisten(client: &mut Client, c: Iplisten) -> Result<(), Fail> {
    match c {
        Iplisten::Add { addr } => {
            change(client, &addr, &Request::IplistenAdd { addr: &addr })?;
            out!("IP address added to the listen list: {addr}");
        }
        Iplisten::Delete { addr } => {
            change(client, &addr, &Request::IplistenDelete { addr: &addr })?;
            out!("IP address deleted from the listen list: {addr}");
        }
        Iplisten::Show(j) => {
            let reply = client.call(&Request::IplistenList, &[])?;
            let rows: Vec<AddressRow<'_>> = reply.rows()?;
            if j.json {
                print_json(&Json::Array(rows.iter().map(|r| json!(r.addr)).collect()));
            } else if rows.is_empty() {
                out!("IP listen list is empty: listening on all addresses.");
            } else {
                out!("IP addresses present in the IP listen list:");
                for r in &rows {
                    out!("    {}", r.addr);
                }
            }
        }
    }
    Ok(())
}

fn cache(client: &mut Client, c: Cache) -> Result<(), Fail> {
    match c {
        Cache::Put {
            url,
            file,
            content_type,
            status,
            headers,
            opts,
        } => {
            let codings = codings(&opts.compress)?;
            let (data, mtime) = read_file(&file)?;
            let ct = content_type.unwrap_or_else(|| files::content_type_for(&file));
            let file = LocalFile {
                data: &data,
                content_type: &ct,
                mtime,
            };
            let mut headers = headers;
            headers.extend(opts.fresh.value().map(|v| format!("Cache-Control: {v}")));
            let put = PutOptions {
                status: status.unwrap_or(0),
                headers: &headers,
                ttl: opts.ttl,
                codings: &codings,
            };
            put_file(client, std::slice::from_ref(&url), &file, &put)?;
            out!("Cached {url} ({} bytes, {ct})", data.len());
            Ok(())
        }
        Cache::Load { dir, prefix, opts } => load(client, &dir, &prefix, &opts),
        Cache::Delete { url } => {
            change(client, &url, &Request::CacheDelete { url: &url })?;
            out!("Deleted {url}");
            Ok(())
        }
        Cache::Flush { prefix } => {
            let reply = client.call(
                &Request::CacheFlush {
                    prefix: prefix.as_deref(),
                },
                &[],
            )?;
            let flushed: FlushRow = reply.row()?;
            out!(
                "Flushed {} entries{}",
                flushed.removed,
                prefix.map(|p| format!(" under {p}")).unwrap_or_default()
            );
            Ok(())
        }
        Cache::Show {
            prefix,
            json: as_json,
        } => {
            let reply = client.call(
                &Request::CacheList {
                    prefix: prefix.as_deref(),
                },
                &[],
            )?;
            show_entries(&reply.rows()?, as_json);
            Ok(())
        }
    }
}

/// `cache load DIR PREFIX`: every file under DIR, with a progress bar on a terminal.
fn load(client: &mut Client, dir: &Path, prefix: &str, opts: &LoadOpts) -> Result<(), Fail> {
    let codings = codings(&opts.compress)?;
    if !dir.is_dir() {
        return Err(Fail(format!("{} is not a directory", dir.display())));
    }
    let list = files::walk(dir, prefix)
        .map_err(|e| Fail(format!("cannot read {}: {e}", dir.display())))?;
    let total: u64 = list.iter().map(|f| f.len).sum();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let headers: Vec<String> = opts
        .fresh
        .value()
        .map(|v| format!("Cache-Control: {v}"))
        .into_iter()
        .collect();
    let put = PutOptions {
        status: 0,
        headers: &headers,
        ttl: opts.ttl,
        codings: &codings,
    };
    let (mut entries, mut stored) = (0usize, 0u64);
    for (i, f) in list.iter().enumerate() {
        let (data, mtime) = read_file(&f.path)?;
        let file = LocalFile {
            data: &data,
            content_type: &f.content_type,
            mtime: mtime.or(f.mtime),
        };
        stored += put_file(client, &f.urls, &file, &put).map_err(|e| {
            Fail(format!(
                "{e} (loaded {i} of {} files before it)",
                list.len()
            ))
        })?;
        entries += f.urls.len();
        bar.inc(f.len);
    }
    bar.finish_and_clear();
    out!(
        "Loaded {} files as {entries} entries ({stored} bytes stored) at {prefix}",
        list.len()
    );
    Ok(())
}

fn show_entries(rows: &[EntryRow<'_>], as_json: bool) {
    if as_json {
        let list = rows
            .iter()
            .map(|r| {
                let enc: Vec<&str> = r.codings.split(',').filter(|s| !s.is_empty()).collect();
                json!({
                    "url": r.url, "status": r.status, "content_type": r.content_type,
                    "bytes": r.bytes, "encodings": enc, "hits": r.hits,
                    "ttl_remaining": r.ttl_left, "last_modified": r.last_modified,
                })
            })
            .collect();
        print_json(&Json::Array(list));
        return;
    }
    if rows.is_empty() {
        out!("There were no cache entries corresponding to the provided URL.");
        return;
    }
    out!("Snapshot of khttp response cache:");
    for r in rows {
        out!("URL: {}", r.url);
        out!("    Status code: {}", r.status);
        out!("    Content type: {}", r.content_type);
        out!("    Content length: {}", r.bytes);
        let codings = if r.codings.is_empty() {
            "identity"
        } else {
            r.codings
        };
        out!("    Encodings: {codings}");
        out!("    Hit count: {}", r.hits);
        if let Some(ttl) = r.ttl_left {
            out!("    Time to live: {ttl} s");
        }
    }
}

fn stats(client: &mut Client, as_json: bool) -> Result<(), Fail> {
    let reply = client.call(&Request::Stats, &[])?;
    let rows: Vec<CounterRow<'_>> = reply.rows()?;
    if as_json {
        print_json_map(rows.iter().map(|r| (r.name, r.value)));
    } else {
        for r in &rows {
            out!("{:<16} {}", r.name, r.value);
        }
    }
    Ok(())
}

fn limits(client: &mut Client, c: Limits) -> Result<(), Fail> {
    match c {
        Limits::Show(j) => {
            let reply = client.call(&Request::LimitsGet, &[])?;
            let rows: Vec<LimitRow<'_>> = reply.rows()?;
            if j.json {
                print_json_map(rows.iter().map(|r| (r.name, r.value)));
            } else {
                for r in &rows {
                    out!(
                        "{:<22} {:<12} (range {}..={})",
                        r.name,
                        r.value,
                        r.min,
                        r.max
                    );
                }
            }
        }
        Limits::Set { name, value } => {
            let v: u64 = value.parse().map_err(|_| {
                Fail(format!(
                    "{name}: the value {value:?} must be a whole number"
                ))
            })?;
            change(
                client,
                &name,
                &Request::LimitsSet {
                    name: &name,
                    value: v,
                },
            )?;
            out!("{name} = {v}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("khttpctl: {msg}");
            ExitCode::FAILURE
        }
    }
}
