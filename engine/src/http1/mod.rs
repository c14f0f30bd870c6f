//! HTTP/1.1 message syntax: request heads, request bodies, list-valued fields, response heads.
//!
//! Nothing here knows about the cache or connections; [`crate::conn`] puts it together.

pub(crate) mod body;
pub(crate) mod fields;
pub(crate) mod request;
pub(crate) mod response;

/// RFC 9110 §5.6.2 `tchar`.
#[must_use]
pub(crate) const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// The value of a hex digit (the caller has checked it is one); 0 otherwise.
#[must_use]
pub(crate) const fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b.wrapping_sub(b'0'),
        b'a'..=b'f' => b.wrapping_sub(b'a').wrapping_add(10),
        b'A'..=b'F' => b.wrapping_sub(b'A').wrapping_add(10),
        _ => 0,
    }
}
