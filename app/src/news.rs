//! News of answers sent without waiting ([`crate::Request::send`]): what went wrong with one,
//! which comes ahead of a later call's reply.

use std::fmt;

use khttp_proto::Status;
use khttp_proto::reply::NewsRow;

use crate::{Error, one};

/// What became of an answer sent without waiting ([`crate::Request::send`]), when it went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct News {
    /// The request the answer was for ([`crate::Request::id`]).
    pub id: u64,
    /// Why khttp refused the answer (its client got 502); `None` when it was accepted but its
    /// client no longer waited.
    pub refused: Option<(Status, String)>,
}

impl News {
    pub(crate) fn undelivered(id: u64) -> Self {
        Self { id, refused: None }
    }

    pub(crate) fn refused(id: u64, status: Status, message: String) -> Self {
        Self {
            id,
            refused: Some((status, message)),
        }
    }

    /// The news a `Status::News` reply carries.
    pub(crate) fn from_reply(out: &[u8]) -> Result<Self, Error> {
        let row = one::<NewsRow<'_>>(out)?;
        Ok(match Status::from_u32(row.status) {
            Some(Status::Ok) => Self::undelivered(row.id),
            Some(s) => Self::refused(row.id, s, row.message.to_owned()),
            None => Self::refused(row.id, Status::Malformed, format!("status {}", row.status)),
        })
    }
}

impl fmt::Display for News {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.refused {
            Some((_, why)) => write!(f, "the answer to request {} was refused: {why}", self.id),
            None => write!(
                f,
                "the client of request {} left before its answer",
                self.id
            ),
        }
    }
}
