//! What the workers, the control thread, the application sessions and the janitor share: the
//! current site snapshot, and its one writer ([`Shared::writer`]).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use khttp_engine::ctl::{Publish, Writer};
use khttp_engine::{Clock, Instant, Site};

use crate::appqueue::{Apps, Workers};
use crate::state;

/// State shared by every thread.
pub(crate) struct Shared {
    /// The current snapshot. Readers clone the `Arc` when `generation` moves; the one writer
    /// ([`Shared::writer`]) builds the next snapshot from a clone and swaps it in.
    site: RwLock<Arc<Site>>,
    /// Bumped on every publish.
    generation: AtomicU64,
    /// Serialises writers (control commands, application attaches and answers, the janitor):
    /// held by [`SiteLock`], the only way to publish.
    writer: Mutex<()>,
    /// Set by SIGINT/SIGTERM.
    pub(crate) shutdown: AtomicBool,
    /// Wakes each worker's poll.
    pub(crate) wakers: Mutex<Vec<Arc<mio::Waker>>>,
    /// Open HTTP connections, for `max-connections`.
    pub(crate) connections: AtomicUsize,
    /// Connections being answered 503 because of `max-connections`.
    pub(crate) overloaded: AtomicUsize,
    /// Requests handed to applications (the application endpoint).
    pub(crate) apps: Apps,
    /// Where reservations, the IP list and limits persist.
    pub(crate) state_dir: PathBuf,
    /// The access log, if any.
    pub(crate) access_log: Option<Mutex<crate::log::AccessLog>>,
    /// Its line format (fixed at start).
    log_format: Option<crate::log::Format>,
    /// Sealed memfd copies of large bodies, for `sendfile`.
    pub(crate) bodies: crate::bodies::BodyFiles,
    /// Whether large bodies go out with `sendfile` (`--sendfile`); else everything is `writev`.
    pub(crate) sendfile: bool,
    /// The certificates bound, for the listeners of `https://` reservations.
    pub(crate) certs: crate::tls::Certs,
    start: std::time::Instant,
}

impl Shared {
    /// Shared state around `site`.
    pub(crate) fn new(
        site: Site,
        state_dir: PathBuf,
        access_log: Option<crate::log::AccessLog>,
        certs: crate::tls::Certs,
    ) -> Self {
        Self {
            site: RwLock::new(Arc::new(site)),
            generation: AtomicU64::new(1),
            writer: Mutex::new(()),
            shutdown: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            overloaded: AtomicUsize::new(0),
            apps: Apps::default(),
            state_dir,
            log_format: access_log.as_ref().map(crate::log::AccessLog::format),
            access_log: access_log.map(Mutex::new),
            bodies: crate::bodies::BodyFiles::default(),
            sendfile: true,
            certs,
            start: std::time::Instant::now(),
        }
    }

    /// Counts a connection out (`overload`: one that was answered 503).
    pub(crate) fn leave(&self, overload: bool) {
        let counter = if overload {
            &self.overloaded
        } else {
            &self.connections
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Site> {
        Arc::clone(&self.site.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The publish counter.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The site's writer, holding the writer lock until it is dropped.
    pub(crate) fn writer(&self) -> Writer<SiteLock<'_>> {
        let lock = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        Writer::new(SiteLock {
            shared: self,
            _lock: lock,
        })
    }

    /// Makes `site` current and wakes the workers (only [`SiteLock`] calls it).
    fn publish(&self, site: Arc<Site>) {
        *self.site.write().unwrap_or_else(PoisonError::into_inner) = site;
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// Wakes worker `index`.
    pub(crate) fn wake(&self, index: usize) {
        if let Some(w) = self
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
        {
            let _ = w.wake();
        }
    }

    /// Wakes every worker.
    pub(crate) fn wake_all(&self) {
        for w in self
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = w.wake();
        }
    }

    /// Now, as the engine's clock.
    pub(crate) fn clock(&self) -> Clock {
        let mut c = Clock::new(Instant(0), 0);
        self.update(&mut c);
        c
    }

    /// Moves `clock` to now.
    pub(crate) fn update(&self, clock: &mut Clock) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        clock.update(Instant(ms), unix);
    }

    /// Writes access-log lines.
    pub(crate) fn log_lines(&self, text: &str) {
        if let Some(log) = &self.access_log {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write(text);
        }
    }

    /// The access log's line format, if there is a log.
    pub(crate) const fn log_format(&self) -> Option<crate::log::Format> {
        self.log_format
    }

    /// Reopens the access log at its path (SIGHUP, `khttpctl log reopen`).
    ///
    /// # Errors
    /// One line of English: no log, or it could not be opened.
    pub(crate) fn reopen_log(&self) -> Result<(), String> {
        let log = self
            .access_log
            .as_ref()
            .ok_or_else(|| "khttpd writes no access log (start it with --access-log)".to_owned())?;
        log.lock().unwrap_or_else(PoisonError::into_inner).reopen()
    }
}

impl Workers for Shared {
    fn wake(&self, index: usize) {
        Self::wake(self, index);
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

/// khttpd's half of a site write: the writer lock, held while this lives; the state directory;
/// the shared snapshot.
pub(crate) struct SiteLock<'a> {
    shared: &'a Shared,
    _lock: MutexGuard<'a, ()>,
}

impl Publish for SiteLock<'_> {
    fn current(&self) -> Arc<Site> {
        self.shared.snapshot()
    }

    fn persist(&mut self, site: &Site) -> Result<(), Cow<'static, str>> {
        let dir = &self.shared.state_dir;
        state::save(dir, site)
            .map_err(|e| format!("could not save the change in {}: {e}", dir.display()).into())
    }

    fn publish(&mut self, site: Arc<Site>, _config: bool) {
        // Workers follow the site's listen addresses at their next wake-up.
        self.shared.publish(site);
    }

    fn reopen_log(&mut self) -> Result<(), Cow<'static, str>> {
        self.shared.reopen_log().map_err(Cow::Owned)
    }

    fn certificates(
        &mut self,
        req: &khttp_proto::Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), (khttp_proto::Status, Cow<'static, str>)> {
        crate::tls::command(&self.shared.certs, req, out)
    }
}
