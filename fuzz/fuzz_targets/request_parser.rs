//! Fuzzes the client request parser: no panic on any input, the same requests and the same error
//! whatever the read splits, and every request's raw bytes parse back to the same arguments.
#![no_main]

use bytes::BytesMut;
use haproxy_rs::resp::{Request, RequestLimits, RequestParser};
use libfuzzer_sys::fuzz_target;

/// What a parser made of a stream: the requests' arguments, then the error that stopped it.
type Parsed = (Vec<Vec<Vec<u8>>>, Option<String>);

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits (small ones reach every limit check), whether the client is
    // still unauthenticated (Redis's smaller limits) and the read splits.
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let limits = if seed & 1 == 0 {
        RequestLimits::default()
    } else {
        RequestLimits {
            max_bulk_len: 64,
            max_multibulk_len: 8,
            max_inline_len: 32,
            max_query_buffer: 256,
        }
    };
    let unauthenticated = seed & 2 != 0;
    let whole = parse(limits, unauthenticated, [input]);
    let step = usize::from(seed >> 2) + 1;
    let split = parse(limits, unauthenticated, input.chunks(step));
    assert_eq!(
        whole, split,
        "read splits of {step} bytes changed the outcome"
    );
});

fn parse<'a>(
    limits: RequestLimits,
    unauthenticated: bool,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Parsed {
    let mut parser = RequestParser::new(limits);
    parser.set_unauthenticated(unauthenticated);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match parser.next(&mut buf) {
                Ok(Some(req)) => {
                    check_raw(&req);
                    requests.push(req.args().map(<[u8]>::to_vec).collect());
                }
                Ok(None) => break,
                Err(e) => return (requests, Some(e.client_message())),
            }
        }
    }
    (requests, None)
}

/// The bytes forwarded to Redis are one well-formed multibulk with the same arguments.
fn check_raw(req: &Request) {
    assert!(req.argc() > 0, "empty requests are skipped, never returned");
    // Redis's own limits: an inline command may have more arguments than the small limits allow
    // a multibulk (Redis applies no count limit to inline commands either).
    let mut again = RequestParser::new(RequestLimits::default());
    let mut raw = BytesMut::from(&req.raw()[..]);
    let back = again
        .next(&mut raw)
        .expect("forwarded bytes parse")
        .expect("forwarded bytes are a whole request");
    assert!(raw.is_empty(), "forwarded bytes hold exactly one request");
    assert!(
        back.args().eq(req.args()),
        "forwarded bytes keep the arguments"
    );
}
