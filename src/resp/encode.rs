//! Encoding of commands and of the replies the proxy makes up itself.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

/// Encodes `args` as a RESP multibulk (`*<n>\r\n$<len>\r\n<arg>\r\n...`).
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Bytes {
    let mut buf = BytesMut::new();
    encode_command_into(&mut buf, args, |_| {});
    buf.freeze()
}

/// Appends the multibulk for `args` to `buf`, reporting each argument's byte range within `buf`.
pub(crate) fn encode_command_into<A: AsRef<[u8]>>(
    buf: &mut BytesMut,
    args: &[A],
    mut on_arg: impl FnMut(Range<usize>),
) {
    let payload: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    buf.reserve(payload + 16);
    put_header(buf, b'*', args.len() as u64);
    for arg in args {
        let arg = arg.as_ref();
        put_header(buf, b'$', arg.len() as u64);
        let start = buf.len();
        buf.put_slice(arg);
        on_arg(start..buf.len());
        buf.put_slice(b"\r\n");
    }
}

/// An error reply: `-` + `msg` + CRLF, with CR and LF in `msg` replaced by spaces so the frame stays valid.
///
/// `msg` carries its own prefix, e.g. `"ERR unknown command"`.
pub fn error_reply(msg: &str) -> Bytes {
    line_reply(b'-', msg)
}

/// A status reply: `+` + `msg` + CRLF (CR and LF replaced by spaces).
pub fn status_reply(msg: &str) -> Bytes {
    line_reply(b'+', msg)
}

/// An integer reply: `:<n>\r\n`.
pub fn int_reply(n: i64) -> Bytes {
    let mut buf = BytesMut::with_capacity(24);
    buf.put_u8(b':');
    put_decimal(&mut buf, n);
    buf.put_slice(b"\r\n");
    buf.freeze()
}

/// A bulk string reply: `$<len>\r\n<b>\r\n`.
pub fn bulk_reply(b: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(b.len() + 16);
    put_header(&mut buf, b'$', b.len() as u64);
    buf.put_slice(b);
    buf.put_slice(b"\r\n");
    buf.freeze()
}

/// The RESP2 nil bulk reply: `$-1\r\n`.
pub fn nil_reply() -> Bytes {
    Bytes::from_static(b"$-1\r\n")
}

/// The RESP3 null: `_\r\n`.
pub fn null_reply() -> Bytes {
    Bytes::from_static(b"_\r\n")
}

fn line_reply(prefix: u8, msg: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(msg.len() + 3);
    buf.put_u8(prefix);
    buf.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    buf.put_slice(b"\r\n");
    buf.freeze()
}

fn put_header(buf: &mut BytesMut, kind: u8, n: u64) {
    buf.put_u8(kind);
    put_unsigned(buf, n);
    buf.put_slice(b"\r\n");
}

fn put_decimal(buf: &mut BytesMut, n: i64) {
    if n < 0 {
        buf.put_u8(b'-');
    }
    put_unsigned(buf, n.unsigned_abs());
}

/// Writes `n` in decimal without going through `fmt` (this runs once per forwarded argument).
fn put_unsigned(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.put_slice(digits.get(i..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        assert_eq!(
            &encode_command(&["SET", "k", ""])[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
        assert_eq!(&encode_command::<&[u8]>(&[])[..], b"*0\r\n");
    }

    #[test]
    fn encodes_replies() {
        assert_eq!(&error_reply("ERR bad\r\nthing")[..], b"-ERR bad  thing\r\n");
        assert_eq!(&status_reply("OK")[..], b"+OK\r\n");
        assert_eq!(&int_reply(0)[..], b":0\r\n");
        assert_eq!(&int_reply(-42)[..], b":-42\r\n");
        assert_eq!(&int_reply(i64::MIN)[..], b":-9223372036854775808\r\n");
        assert_eq!(&int_reply(i64::MAX)[..], b":9223372036854775807\r\n");
        assert_eq!(&bulk_reply(b"hi")[..], b"$2\r\nhi\r\n");
        assert_eq!(&nil_reply()[..], b"$-1\r\n");
    }
}
