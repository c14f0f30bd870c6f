//! Bodies read and written as they go: a request's body in pieces ([`BodyReader`]), and a
//! streamed answer's ([`BodyWriter`]).

use std::io::{self, Write};

use khttp_proto::Request as Call;
use khttp_proto::reply::{BodyRow, RespondRow};

use crate::{Error, Queue, call, one};

/// Pieces written to a [`BodyWriter`] are gathered up to this many bytes before they go.
pub(crate) const PIECE: usize = 64 * 1024;

/// A request's body as it is read ([`crate::Request::body_reader`]).
#[derive(Debug)]
pub struct BodyReader<'a> {
    pub(crate) queue: &'a mut Queue,
    pub(crate) id: u64,
    /// What came with the head.
    pub(crate) held: &'a [u8],
    pub(crate) len: u64,
    /// Bytes read so far.
    pub(crate) offset: u64,
    /// The piece being read, and how far.
    pub(crate) piece: Vec<u8>,
    pub(crate) at: usize,
}

impl io::Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.offset);
        if out.is_empty() || left == 0 {
            return Ok(0);
        }
        let start = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let from: &[u8] = if let Some(held) = self.held.get(start..).filter(|h| !h.is_empty()) {
            held
        } else {
            if self.at >= self.piece.len() {
                let more = Call::QueueReceiveBody {
                    id: self.id,
                    offset: self.offset,
                };
                let reply = call(&mut self.queue.link, &more, &[]).map_err(io::Error::other)?;
                let piece = one::<BodyRow<'_>>(&reply).map_err(io::Error::other)?.bytes;
                if piece.is_empty() || piece.len() as u64 > left {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the body ended short of its length",
                    ));
                }
                self.piece.clear();
                self.piece.extend_from_slice(piece);
                self.at = 0;
            }
            &self.piece[self.at..]
        };
        let n = from
            .len()
            .min(out.len())
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&from[..n]);
        if start >= self.held.len() {
            self.at += n;
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The body of a streamed answer ([`crate::Request::respond_stream`]). Writes are gathered into
/// pieces of 64 KiB; each piece waits while the client is more than khttp's stream window
/// behind. Dropped without [`BodyWriter::finish`], the answer is given up: the client sees a
/// broken response (a reset), never a short one that looks whole.
#[derive(Debug)]
pub struct BodyWriter<'q> {
    pub(crate) queue: &'q mut Queue,
    pub(crate) id: u64,
    /// Bytes still to come, when the length was announced.
    pub(crate) left: Option<u64>,
    pub(crate) buf: Vec<u8>,
    pub(crate) delivered: bool,
    pub(crate) finished: bool,
}

impl BodyWriter<'_> {
    /// Whether the client still waits: false once it has gone (or the answer timed out), after
    /// which writes fail with [`io::ErrorKind::BrokenPipe`].
    #[must_use]
    pub const fn delivered(&self) -> bool {
        self.delivered
    }

    /// Sends what is gathered as one piece (`last`: the end of the body).
    fn send(&mut self, last: bool) -> Result<bool, Error> {
        let len = self.buf.len() as u64;
        if let Some(left) = self.left {
            if len > left {
                return Err(Error::Invalid(format!(
                    "the body is longer than its announced length ({len} bytes over {left} left)"
                )));
            }
            if last && len != left {
                return Err(Error::Invalid(format!(
                    "the body ended {} bytes short of its announced length",
                    left - len
                )));
            }
            self.left = Some(left - len);
        }
        let piece = Call::QueueSend {
            id: self.id,
            last,
            body_len: len,
        };
        let reply = call(&mut self.queue.link, &piece, &self.buf)?;
        self.buf.clear();
        self.delivered = one::<RespondRow>(&reply)?.delivered;
        Ok(self.delivered)
    }

    /// Sends the rest and ends the body. Returns whether the client got it all.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a body shorter than its announced length (the client gets a
    /// reset); [`Error::Io`].
    pub fn finish(mut self) -> Result<bool, Error> {
        self.finished = true;
        if !self.delivered {
            return Ok(false);
        }
        let delivered = self.send(true);
        if delivered.is_err() {
            let _ = call(
                &mut self.queue.link,
                &Call::QueueCancel { id: self.id },
                &[],
            );
        }
        delivered
    }
}

impl Write for BodyWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !self.delivered {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client is no longer waiting",
            ));
        }
        if let Some(left) = self.left
            && (self.buf.len() as u64).saturating_add(bytes.len() as u64) > left
        {
            return Err(
                Error::Invalid("the body is longer than its announced length".into()).into(),
            );
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= PIECE {
            self.send(false)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.delivered && !self.buf.is_empty() {
            self.send(false)?;
        }
        Ok(())
    }
}

impl Drop for BodyWriter<'_> {
    fn drop(&mut self) {
        if !self.finished && self.delivered {
            // Given up half-way: the client must see a broken response.
            let _ = call(
                &mut self.queue.link,
                &Call::QueueCancel { id: self.id },
                &[],
            );
        }
    }
}
