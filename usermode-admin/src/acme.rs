//! `khttpctl sslcert acme` and `sslcert renew` (issue #24): certificates from an ACME CA
//! (RFC 8555), as Caddy gets them, with the http-01 challenge answered from khttp's own cache.
//!
//! - The ACME client is instant-acme (0.8, on ring), not one written here.
//! - The account key is kept in `ACME_DIR/account-DIRECTORY.json` (instant-acme's credentials:
//!   the account URL and its PKCS#8 key), mode 0600 in a directory of mode 0700.
//! - http-01 (RFC 8555 §8.3): for each token, the key authorization is put in the cache at
//!   `http://+:PORT/.well-known/acme-challenge/TOKEN` (PORT: `--http-port`, 80 by default),
//!   under a reservation of that path made for the purpose when none exists. `+` rather than the
//!   name, so that a `+` reservation of the whole port (which routing would consult first) does
//!   not hide it. The entries and that reservation are removed afterwards, also on failure.
//! - The key is made by instant-acme (rcgen, ECDSA P-256), the certificate installed with
//!   `sslcert add`, and what renewal needs is recorded in `ACME_DIR/certs/BINDING.json`.
//! - `renew` gets again every recorded certificate within `--days` (30) of its expiry, as
//!   `sslcert show` reports it, or no longer bound.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use khttp_local::admin::put::{LocalFile, PutOptions, put_file};
use khttp_proto::Request;
use khttp_proto::Status;
use khttp_proto::reply::CertRow;
use khttpctl::endpoint::{CallError, Client};
use serde::{Deserialize, Serialize};

use crate::Fail;

/// Where the ACME CA is and how to reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Options {
    /// The directory URL (RFC 8555 §7.1.1).
    pub(crate) directory: String,
    /// A contact address for the account.
    pub(crate) email: Option<String>,
    /// The port the CA connects to for http-01 (80 in production).
    pub(crate) http_port: u16,
    /// A CA certificate to trust for the directory's HTTPS instead of the system's (a test
    /// CA such as Pebble).
    pub(crate) root: Option<PathBuf>,
}

/// What `renew` needs: the binding and how it was obtained.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    binding: String,
    name: String,
    options: Options,
}

/// The default ACME directory: beside khttpd's state (`/var/lib/khttp/acme` as root).
pub(crate) fn default_dir() -> PathBuf {
    if khttp_local::socket::current_uid() == Some(0) {
        return PathBuf::from("/var/lib/khttp/acme");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("khttp/acme")
}

/// The name a `hostnameport=NAME:PORT` binding is for.
fn name_of(binding: &str) -> Result<&str, Fail> {
    binding
        .strip_prefix("hostnameport=")
        .and_then(|r| r.rsplit_once(':'))
        .map(|(name, _)| name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Fail(format!(
                "{binding}: ACME certifies a name: give hostnameport=NAME:PORT"
            ))
        })
}

/// A file name for `s` (`:` and `/` are not kept).
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '=' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn acme_error(e: instant_acme::Error) -> Fail {
    Fail(format!("ACME: {e}"))
}

/// Writes `text` privately (mode 0600, atomically).
fn save(dir: &Path, name: &str, text: &str) -> Result<(), Fail> {
    khttp_local::files::save_private(dir, name, text.as_bytes())
        .map_err(|e| Fail(format!("cannot save {}: {e}", dir.join(name).display())))
}

/// The account for `o.directory`: the one kept in `dir`, or a new one (kept there).
async fn account(dir: &Path, o: &Options) -> Result<Account, Fail> {
    let builder = || match &o.root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    let name = format!("account-{}.json", file_part(&o.directory));
    let path = dir.join(&name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let credentials: AccountCredentials =
            serde_json::from_str(&text).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
        return builder()
            .map_err(acme_error)?
            .from_credentials(credentials)
            .await
            .map_err(acme_error);
    }
    let contact = o.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()
        .map_err(acme_error)?
        .create(&new, o.directory.clone(), None)
        .await
        .map_err(acme_error)?;
    let text = serde_json::to_string(&credentials).map_err(|e| Fail(e.to_string()))?;
    save(dir, &name, &text)?;
    Ok(account)
}

/// The challenges put in the cache, and the reservation made for them, removed when done.
struct Answers<'c> {
    client: &'c mut Client,
    port: u16,
    prefix: String,
    reserved: bool,
    urls: Vec<String>,
}

impl Answers<'_> {
    /// Serves `body` at the challenge URL of `token`.
    fn answer(&mut self, token: &str, body: &str) -> Result<(), Fail> {
        if !self.reserved {
            let req = Request::UrlaclAdd {
                prefix: &self.prefix,
                acl: None,
                cache_control: Some("no-cache"),
            };
            match self.client.call(&req, &[]) {
                Ok(_) => {
                    self.reserved = true;
                    self.wait_listening();
                }
                Err(CallError::Refused(Status::AlreadyExists, _)) => {}
                Err(e) => return Err(Fail(format!("{}: {e}", self.prefix))),
            }
        }
        let url = format!("{}{token}", self.prefix);
        let file = LocalFile {
            data: body.as_bytes(),
            content_type: "text/plain",
            mtime: None,
        };
        let put = PutOptions {
            status: 0,
            headers: &[],
            ttl: Some(600),
            codings: &[],
        };
        put_file(self.client, std::slice::from_ref(&url), &file, &put)
            .map_err(|e| Fail(format!("{url}: {e}")))?;
        self.urls.push(url);
        Ok(())
    }

    /// A reservation opens its port a moment after it is made: the CA may connect as soon as
    /// it hears the challenge is ready, so wait (two seconds at most) until the port accepts.
    fn wait_listening(&self) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        for _ in 0..40 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes what was put, and the reservation if it was made here.
    fn clear(&mut self) {
        for url in self.urls.drain(..) {
            let _ = self.client.call(&Request::CacheDelete { url: &url }, &[]);
        }
        if self.reserved {
            let req = Request::UrlaclDelete {
                prefix: &self.prefix,
            };
            let _ = self.client.call(&req, &[]);
            self.reserved = false;
        }
    }
}

/// How long the order is polled: up to a minute, the delay growing by half each time.
fn policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(60))
}

/// Answers the order's http-01 challenges and waits until the CA has checked them.
async fn validate(order: &mut Order, answers: &mut Answers<'_>) -> Result<(), Fail> {
    let mut authorizations = order.authorizations();
    while let Some(a) = authorizations.next().await {
        let mut a = a.map_err(acme_error)?;
        if a.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = a
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| Fail("ACME: the CA offers no http-01 challenge".into()))?;
        let key_authorization = challenge.key_authorization();
        answers.answer(&challenge.token, key_authorization.as_str())?;
        challenge.set_ready().await.map_err(acme_error)?;
    }
    match order.poll_ready(&policy()).await.map_err(acme_error)? {
        OrderStatus::Ready => Ok(()),
        status => Err(Fail(format!(
            "ACME: the CA did not validate the name (order {status:?}); it must reach \
             http://NAME:{}/.well-known/acme-challenge/ on this server",
            answers.port
        ))),
    }
}

/// Gets a certificate for `binding`'s name from the CA and binds it (`sslcert add`); records
/// how, for `renew`.
pub(crate) fn obtain(
    client: &mut Client,
    binding: &str,
    o: &Options,
    dir: &Path,
) -> Result<(), Fail> {
    let name = name_of(binding)?.to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(format!("cannot start the ACME client: {e}")))?;
    let (chain, key) = runtime.block_on(async {
        let account = account(dir, o).await?;
        let ids = [Identifier::Dns(name.clone())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(acme_error)?;
        let mut answers = Answers {
            client: &mut *client,
            port: o.http_port,
            prefix: format!("http://+:{}/.well-known/acme-challenge/", o.http_port),
            reserved: false,
            urls: Vec::new(),
        };
        let validated = validate(&mut order, &mut answers).await;
        answers.clear();
        validated?;
        let key = order.finalize().await.map_err(acme_error)?;
        let chain = order
            .poll_certificate(&policy())
            .await
            .map_err(acme_error)?;
        Ok::<_, Fail>((chain, key))
    })?;
    let req = Request::SslcertAdd {
        binding,
        chain: &chain,
        key: &key,
        ocsp: None,
    };
    let sent = client.call(&req, &[]);
    khttp_local::files::wipe(key.into_bytes());
    sent.map_err(|e| Fail(format!("{binding}: {e}")))?;
    let record = Record {
        binding: binding.to_owned(),
        name,
        options: o.clone(),
    };
    let text = serde_json::to_string_pretty(&record).map_err(|e| Fail(e.to_string()))?;
    save(
        &dir.join("certs"),
        &format!("{}.json", file_part(binding)),
        &text,
    )
}

/// `sslcert renew`: every recorded binding within `days` of its certificate's expiry, or no
/// longer bound, is obtained again. Returns what was done, a line per binding.
pub(crate) fn renew(client: &mut Client, dir: &Path, days: u64) -> Result<Vec<String>, Fail> {
    let certs = dir.join("certs");
    let mut records = Vec::new();
    match std::fs::read_dir(&certs) {
        Ok(entries) => {
            for e in entries.filter_map(Result::ok) {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "json") {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| Fail(format!("cannot read {}: {e}", path.display())))?;
                    let r: Record = serde_json::from_str(&text)
                        .map_err(|e| Fail(format!("{}: {e}", path.display())))?;
                    records.push(r);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Fail(format!("cannot read {}: {e}", certs.display()))),
    }
    records.sort_by(|a, b| a.binding.cmp(&b.binding));
    let reply = client.call(&Request::SslcertList, &[])?;
    let bound: Vec<(String, Option<u64>)> = reply
        .rows::<CertRow<'_>>()?
        .iter()
        .map(|r| (r.binding.to_owned(), r.not_after))
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let horizon = now.saturating_add(days.saturating_mul(86_400));
    let mut done = Vec::new();
    for r in &records {
        let expiry = bound.iter().find(|(b, _)| *b == r.binding).map(|(_, t)| *t);
        let due = match expiry {
            None => true,       // no longer bound
            Some(None) => true, // its expiry cannot be read
            Some(Some(t)) => t <= horizon,
        };
        if due {
            obtain(client, &r.binding, &r.options, dir)?;
            done.push(format!("{}: renewed", r.binding));
        } else {
            done.push(format!(
                "{}: not due (more than {days} days left)",
                r.binding
            ));
        }
    }
    Ok(done)
}
