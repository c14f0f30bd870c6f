//! Streamed answers (issue #12): the head and first piece, then pieces as the application
//! sends them, framed by length, chunks or the close.

use alloc::sync::Arc;

use crate::exchange::RequestId;
use crate::http1::response::{Persist, ResponseHead, Served, put_chunk};
use crate::out::Body;
use crate::queues::QueueStats;
use crate::respond::AppResponse;
use crate::site::Site;
use crate::time::{Clock, Instant};

use super::{Connection, State};

/// How a streamed answer's pieces reach the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pieces {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by the close (HTTP/1.0, length unknown).
    Close,
    /// No body goes out (HEAD, 204, 304): the pieces are dropped.
    Dropped,
}

/// A streamed answer on its way (issue #12): the head is out, pieces follow.
#[derive(Debug)]
pub(super) struct Streaming {
    pub(super) id: RequestId,
    pub(super) pieces: Pieces,
    pub(super) keep_alive: bool,
    /// When the last piece arrived.
    pub(super) since: Instant,
    pub(super) status: u16,
    /// Body bytes sent so far.
    pub(super) body_bytes: u64,
    pub(super) stats: Option<Arc<QueueStats>>,
}

impl Connection {
    /// Sends a streamed answer's head and first piece; the rest comes with
    /// [`Connection::handle_piece`].
    pub(super) fn start_stream(&mut self, id: RequestId, r: &AppResponse, clock: &Clock) -> bool {
        let State::Deferred(d) = &mut self.state else {
            return false;
        };
        let (mut persist, mut keep_alive) = (d.persist, d.keep_alive);
        let pieces = match r.length {
            _ if d.head_only || r.bodiless() => Pieces::Dropped,
            Some(n) => Pieces::Length(n),
            None if d.http11 => Pieces::Chunked,
            None => {
                persist = Persist::Close;
                keep_alive = false;
                Pieces::Close
            }
        };
        let stats = d.stats.take();
        let length = match pieces {
            Pieces::Length(n) => Some(n),
            _ if r.bodiless() => None,
            _ => r.length,
        };
        let head = ResponseHead {
            status: r.status,
            date: clock.date(),
            fields: &[&r.fields],
            length,
            persist,
        };
        self.state = State::Streaming(Streaming {
            id,
            pieces,
            keep_alive,
            since: self.now,
            status: r.status,
            body_bytes: 0,
            stats,
        });
        let written = if pieces == Pieces::Chunked {
            head.write_chunked(&mut self.out)
        } else {
            head.write(&mut self.out)
        };
        if written.is_err() {
            self.abort_stream();
            return false;
        }
        self.put_piece(&r.body, false)
    }

    /// The next piece of the streamed answer to request `id` ([`crate::Outcome::Piece`]);
    /// `last` ends it. Returns false when the connection no longer waits for it: the client
    /// went, the answer timed out, or the application broke its own framing (more or fewer
    /// bytes than its `Content-Length`), which resets the connection.
    pub fn handle_piece(
        &mut self,
        id: RequestId,
        body: &Body,
        last: bool,
        clock: &Clock,
        site: &Site,
    ) -> bool {
        self.now = clock.now();
        self.limits = *site.limits();
        if !self.mid_response() || self.waiting_for() != Some(id) {
            return false;
        }
        if !self.put_piece(body, last) {
            return false;
        }
        if last && let State::Streaming(st) = &self.state {
            let (status, body_bytes) = (st.status, st.body_bytes);
            let (keep_alive, close) = (st.keep_alive, st.pieces == Pieces::Close);
            self.served(
                Served {
                    status,
                    body_bytes,
                    hit: false,
                },
                site,
            );
            self.state = State::Head;
            if close || !keep_alive {
                self.stop_reading();
            }
            self.resume(clock, site);
        }
        true
    }

    /// Appends one piece of the streamed answer, framed; false (and the connection reset) when
    /// it breaks the answer's length or memory runs out.
    pub(super) fn put_piece(&mut self, body: &Body, last: bool) -> bool {
        let State::Streaming(st) = &mut self.state else {
            return false;
        };
        let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
        st.since = self.now;
        let written = match &mut st.pieces {
            Pieces::Dropped => Ok(()),
            Pieces::Length(left) => {
                if len > *left || (last && len != *left) {
                    return self.abort_stream();
                }
                *left = left.saturating_sub(len);
                self.out.body(body, 0, body.len())
            }
            Pieces::Close => self.out.body(body, 0, body.len()),
            Pieces::Chunked => put_chunk(&mut self.out, body, last),
        };
        if written.is_err() {
            return self.abort_stream();
        }
        if st.pieces != Pieces::Dropped {
            st.body_bytes = st.body_bytes.saturating_add(len);
        }
        self.commit();
        true
    }

    /// A streamed answer that cannot be finished: logged as far as it went, and the connection
    /// reset. Returns false, for the callers' convenience.
    pub(super) fn abort_stream(&mut self) -> bool {
        if let State::Streaming(st) = &self.state {
            let (status, body_bytes) = (st.status, st.body_bytes);
            self.log_end(status, body_bytes, false);
        }
        self.abort();
        false
    }
}
