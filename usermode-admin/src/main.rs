//! khttpctl: the khttp admin CLI (DESIGN §7). Every failure prints one line and exits non-zero.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use khttp_local::compress::{self, Coding};
use khttp_local::files;
use khttp_proto::{PutEntry, Request};
use khttpctl::endpoint::{Cell, Client, Endpoint, default_endpoint};
use serde_json::{Value as Json, json};

/// Administer khttp: URL reservations, the IP listen list, the response cache, limits.
#[derive(Parser, Debug)]
#[command(name = "khttpctl", version, about)]
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
    /// Protocol and server version.
    Version,
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
        /// The user who may register under it.
        #[arg(long, conflicts_with = "sddl")]
        user: Option<String>,
        /// An SDDL string, e.g. D:(A;;GX;;;WD)
        #[arg(long)]
        sddl: Option<String>,
    },
    /// Delete a reservation and its cache entries.
    Delete { prefix: String },
    /// List reservations.
    Show(JsonFlag),
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

#[derive(Args, Debug)]
struct LoadOpts {
    /// Seconds until the entries expire.
    #[arg(long)]
    ttl: Option<u64>,
    /// Also store compressed variants: gzip, br or gzip,br.
    #[arg(long, value_delimiter = ',')]
    compress: Vec<String>,
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
    names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            Coding::parse(n).ok_or_else(|| {
                Fail(format!(
                    "unknown --compress coding {n:?}: use gzip, br or gzip,br"
                ))
            })
        })
        .collect()
}

/// Puts one file's bytes at each of `urls`; returns the bytes stored.
fn put_file(
    client: &mut Client,
    urls: &[String],
    data: &[u8],
    content_type: &str,
    mtime: Option<u64>,
    status: u16,
    headers: &[String],
    ttl: Option<u64>,
    codings: &[Coding],
) -> Result<u64, Fail> {
    let gzip = codings
        .contains(&Coding::Gzip)
        .then(|| compress::compress(data, Coding::Gzip))
        .flatten();
    let br = codings
        .contains(&Coding::Br)
        .then(|| compress::compress(data, Coding::Br))
        .flatten();
    let mut direct = Vec::with_capacity(
        data.len() + gzip.as_ref().map_or(0, Vec::len) + br.as_ref().map_or(0, Vec::len),
    );
    direct.extend_from_slice(data);
    direct.extend_from_slice(gzip.as_deref().unwrap_or_default());
    direct.extend_from_slice(br.as_deref().unwrap_or_default());
    let len = |v: &Option<Vec<u8>>| v.as_ref().map(|b| b.len() as u64);
    let mut stored = 0;
    for url in urls {
        // The server's own URL grammar, checked here so that a bad URL reads the same from both
        // servers: the driver's refusal of a `cache put` carries a status, not the fault.
        khttp_engine::route::parse_url(url).map_err(|e| Fail(format!("{url}: {e}")))?;
        let req = Request::CachePut(PutEntry {
            url,
            content_type,
            status,
            ttl,
            last_modified: mtime,
            headers: headers.iter().map(String::as_str).collect(),
            identity_len: data.len() as u64,
            gzip_len: len(&gzip),
            br_len: len(&br),
        });
        client
            .call(&req, &direct)
            .map_err(|e| Fail(format!("{url}: {e}")))?;
        stored += direct.len() as u64;
    }
    Ok(stored)
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

fn opt_num(c: &Cell) -> Json {
    if c.num() == u64::MAX {
        Json::Null
    } else {
        json!(c.num())
    }
}

fn run(cli: Cli) -> Result<(), Fail> {
    let endpoint = cli.endpoint.unwrap_or_else(default_endpoint);
    let mut client = Client::connect(&endpoint)?;
    let mut call = |req: &Request<'_>| client.call(req, &[]).map_err(Fail::from);
    match cli.command {
        Command::Version => {
            let rows = call(&Request::Version)?;
            let row = rows
                .first()
                .ok_or_else(|| Fail("empty version reply".into()))?;
            out!("khttpctl {}", env!("CARGO_PKG_VERSION"));
            out!(
                "server {} (control protocol {})",
                row[1].text(),
                row[0].num()
            );
        }
        Command::Urlacl(Urlacl::Add { prefix, user, sddl }) => {
            let acl = user
                .map(|u| format!("user:{u}"))
                .or(sddl.map(|s| format!("sddl:{s}")));
            call(&Request::UrlaclAdd {
                prefix: &prefix,
                acl: acl.as_deref(),
            })
            .map_err(|e| Fail(format!("{prefix}: {}", e.0)))?;
            out!("URL reservation added: {prefix}");
        }
        Command::Urlacl(Urlacl::Delete { prefix }) => {
            call(&Request::UrlaclDelete { prefix: &prefix })
                .map_err(|e| Fail(format!("{prefix}: {}", e.0)))?;
            out!("URL reservation deleted: {prefix}");
        }
        Command::Urlacl(Urlacl::Show(j)) => {
            let rows = call(&Request::UrlaclList)?;
            if j.json {
                let list: Vec<Json> = rows
                    .iter()
                    .map(|r| json!({"prefix": r[0].text(), "acl": Some(r[1].text()).filter(|s| !s.is_empty())}))
                    .collect();
                print_json(&Json::Array(list));
            } else if rows.is_empty() {
                out!("No URL reservations.");
            } else {
                for r in &rows {
                    out!("    Reserved URL : {}", r[0].text());
                    match r[1].text().split_once(':') {
                        Some(("user", u)) => out!("        User: {u}"),
                        Some(("sddl", s)) => out!("        SDDL: {s}"),
                        _ => {}
                    }
                }
            }
        }
        Command::Iplisten(Iplisten::Add { addr }) => {
            call(&Request::IplistenAdd { addr: &addr })
                .map_err(|e| Fail(format!("{addr}: {}", e.0)))?;
            out!("IP address added to the listen list: {addr}");
        }
        Command::Iplisten(Iplisten::Delete { addr }) => {
            call(&Request::IplistenDelete { addr: &addr })
                .map_err(|e| Fail(format!("{addr}: {}", e.0)))?;
            out!("IP address deleted from the listen list: {addr}");
        }
        Command::Iplisten(Iplisten::Show(j)) => {
            let rows = call(&Request::IplistenList)?;
            if j.json {
                print_json(&Json::Array(
                    rows.iter().map(|r| json!(r[0].text())).collect(),
                ));
            } else if rows.is_empty() {
                out!("IP listen list is empty: listening on all addresses.");
            } else {
                out!("IP addresses present in the IP listen list:");
                for r in &rows {
                    out!("    {}", r[0].text());
                }
            }
        }
        Command::Cache(Cache::Put {
            url,
            file,
            content_type,
            status,
            headers,
            opts,
        }) => {
            let codings = codings(&opts.compress)?;
            let (data, mtime) = read_file(&file)?;
            let ct = content_type.unwrap_or_else(|| files::content_type_for(&file));
            put_file(
                &mut client,
                std::slice::from_ref(&url),
                &data,
                &ct,
                mtime,
                status.unwrap_or(0),
                &headers,
                opts.ttl,
                &codings,
            )?;
            out!("Cached {url} ({} bytes, {ct})", data.len());
        }
        Command::Cache(Cache::Load { dir, prefix, opts }) => {
            let codings = codings(&opts.compress)?;
            if !dir.is_dir() {
                return Err(Fail(format!("{} is not a directory", dir.display())));
            }
            let list = files::walk(&dir, &prefix)
                .map_err(|e| Fail(format!("cannot read {}: {e}", dir.display())))?;
            let total: u64 = list.iter().map(|f| f.len).sum();
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if !std::io::stderr().is_terminal() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let (mut entries, mut stored) = (0usize, 0u64);
            for (i, f) in list.iter().enumerate() {
                let (data, mtime) = read_file(&f.path)?;
                stored += put_file(
                    &mut client,
                    &f.urls,
                    &data,
                    &f.content_type,
                    mtime.or(f.mtime),
                    0,
                    &[],
                    opts.ttl,
                    &codings,
                )
                .map_err(|e| {
                    Fail(format!(
                        "{} (loaded {i} of {} files before it)",
                        e.0,
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
        }
        Command::Cache(Cache::Delete { url }) => {
            call(&Request::CacheDelete { url: &url })
                .map_err(|e| Fail(format!("{url}: {}", e.0)))?;
            out!("Deleted {url}");
        }
        Command::Cache(Cache::Flush { prefix }) => {
            let rows = call(&Request::CacheFlush {
                prefix: prefix.as_deref(),
            })?;
            let n = rows.first().and_then(|r| r.first()).map_or(0, Cell::num);
            out!(
                "Flushed {n} entries{}",
                prefix.map(|p| format!(" under {p}")).unwrap_or_default()
            );
        }
        Command::Cache(Cache::Show {
            prefix,
            json: as_json,
        }) => {
            let rows = call(&Request::CacheList {
                prefix: prefix.as_deref(),
            })?;
            if as_json {
                let list: Vec<Json> = rows
                    .iter()
                    .map(|r| {
                        let enc: Vec<&str> =
                            r[4].text().split(',').filter(|s| !s.is_empty()).collect();
                        json!({
                            "url": r[0].text(), "status": r[1].num(), "content_type": r[2].text(),
                            "bytes": r[3].num(), "encodings": enc, "hits": r[5].num(),
                            "ttl_remaining": opt_num(&r[6]), "last_modified": opt_num(&r[7]),
                        })
                    })
                    .collect();
                print_json(&Json::Array(list));
            } else if rows.is_empty() {
                out!("There were no cache entries corresponding to the provided URL.");
            } else {
                out!("Snapshot of khttp response cache:");
                for r in &rows {
                    out!("URL: {}", r[0].text());
                    out!("    Status code: {}", r[1].num());
                    out!("    Content type: {}", r[2].text());
                    out!("    Content length: {}", r[3].num());
                    out!(
                        "    Encodings: {}",
                        if r[4].text().is_empty() {
                            "identity"
                        } else {
                            r[4].text()
                        }
                    );
                    out!("    Hit count: {}", r[5].num());
                    if r[6].num() != u64::MAX {
                        out!("    Time to live: {} s", r[6].num());
                    }
                }
            }
        }
        Command::Stats(j) => {
            let rows = call(&Request::Stats)?;
            if j.json {
                print_json(&Json::Object(
                    rows.iter()
                        .map(|r| (r[0].text().to_string(), json!(r[1].num())))
                        .collect(),
                ));
            } else {
                for r in &rows {
                    out!("{:<16} {}", r[0].text(), r[1].num());
                }
            }
        }
        Command::Limits(Limits::Show(j)) => {
            let rows = call(&Request::LimitsGet)?;
            if j.json {
                print_json(&Json::Object(
                    rows.iter()
                        .map(|r| (r[0].text().to_string(), json!(r[1].num())))
                        .collect(),
                ));
            } else {
                for r in &rows {
                    out!(
                        "{:<22} {:<12} (range {}..={})",
                        r[0].text(),
                        r[1].num(),
                        r[2].num(),
                        r[3].num()
                    );
                }
            }
        }
        Command::Limits(Limits::Set { name, value }) => {
            let v: u64 = value.parse().map_err(|_| {
                Fail(format!(
                    "{name}: the value {value:?} must be a whole number"
                ))
            })?;
            call(&Request::LimitsSet {
                name: &name,
                value: v,
            })
            .map_err(|e| Fail(format!("{name}: {}", e.0)))?;
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
