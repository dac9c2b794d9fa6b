//! Unit tests for the client request parser.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;

fn parse_all(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut p = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(r) = p.next(&mut buf).unwrap() {
        out.push(r.args().map(<[u8]>::to_vec).collect());
    }
    out
}

fn err_of(input: &[u8], limits: RequestLimits) -> String {
    let mut p = RequestParser::new(limits);
    let mut buf = BytesMut::from(input);
    loop {
        match p.next(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("no error for {input:?}"),
            Err(e) => return e.client_message(),
        }
    }
}

fn err(input: &[u8]) -> String {
    err_of(input, RequestLimits::default())
}

fn strs(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_vec()).collect()
}

const PIPELINE: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nal\r\n\
*0\r\n*-1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n\r\n\n  \r\nPING\r\nset  \"a b\" 'c'\n*1\r\n$0\r\n\r\n";

fn pipeline_want() -> Vec<Vec<Vec<u8>>> {
    vec![
        strs(&["SET", "k", "v\r\nal"]),
        strs(&["GET", "k"]),
        strs(&["PING"]),
        strs(&["set", "a b", "c"]),
        strs(&[""]),
    ]
}

/// Feeds `input` in the given pieces, collecting requests (and checking raw bytes are well-formed).
fn parse_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<Vec<u8>>> {
    let mut p = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(r) = p.next(&mut buf).unwrap() {
            let args: Vec<Vec<u8>> = r.args().map(<[u8]>::to_vec).collect();
            assert_eq!(r.raw(), Request::from_args(&args).raw());
            out.push(args);
        }
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn parses_a_mixed_pipeline_in_one_piece() {
    assert_eq!(parse_all(PIPELINE), pipeline_want());
}

#[test]
fn parses_the_pipeline_byte_by_byte() {
    assert_eq!(parse_pieces(PIPELINE.chunks(1)), pipeline_want());
}

#[test]
fn parses_the_pipeline_split_at_every_point() {
    for i in 0..=PIPELINE.len() {
        let (a, b) = PIPELINE.split_at(i);
        assert_eq!(parse_pieces([a, b]), pipeline_want(), "split at {i}");
    }
}

#[test]
fn parses_the_pipeline_split_at_random_points() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..500 {
        let mut pieces = Vec::new();
        let mut rest = PIPELINE;
        while !rest.is_empty() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let n = ((seed >> 33) as usize % 12 + 1).min(rest.len());
            let (a, b) = rest.split_at(n);
            pieces.push(a);
            rest = b;
        }
        assert_eq!(parse_pieces(pieces), pipeline_want());
    }
}

#[test]
fn raw_is_the_exact_multibulk_and_zero_copy() {
    let mut p = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"[..]);
    let r = p.next(&mut buf).unwrap().unwrap();
    assert_eq!(&r.raw()[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    assert_eq!(
        (r.argc(), r.name(), r.arg(1), r.arg(2)),
        (2, &b"GET"[..], Some(&b"k"[..]), None)
    );
    assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
}

#[test]
fn inline_commands_are_reencoded() {
    let mut p = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::from(&b"get k\r\n"[..]);
    let r = p.next(&mut buf).unwrap().unwrap();
    assert_eq!(&r.raw()[..], b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
    assert_eq!(r.name(), b"get");
}

#[test]
fn inline_follows_sdssplitargs() {
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"a  b\tc\n", &[b"a", b"b", b"c"]),
        (b"\"a\\x41\\n\\\"\" x\r\n", &[b"aA\n\"", b"x"]),
        (b"\"\\xZZ\"\n", &[b"xZZ"]),
        (b"'it\\'s' \"\"\n", &[b"it's", b""]),
        (b"'a\\nb'\n", &[b"a\\nb"]),
        (b"foo\"bar\"\n", &[b"foobar"]),
        (b"a\0b c\n", &[b"a"]),
        (b"x\r\r\n", &[b"x"]),
    ];
    for (line, want) in cases {
        let got = parse_all(line);
        let want: Vec<Vec<u8>> = want.iter().map(|a| a.to_vec()).collect();
        assert_eq!(got, vec![want], "{line:?}");
    }
}

#[test]
fn every_error_text_matches_redis() {
    let u = "Protocol error: unbalanced quotes in request";
    assert_eq!(err(b"set \"a\n"), u);
    assert_eq!(err(b"set \"a\"b\n"), u);
    assert_eq!(err(b"set 'a\n"), u);
    assert_eq!(err(b"set 'a'b\n"), u);
    let mb = "Protocol error: invalid multibulk length";
    assert_eq!(err(b"*x\r\n"), mb);
    assert_eq!(err(b"*\r\n"), mb);
    assert_eq!(err(b"*2147483648\r\n"), mb);
    assert_eq!(err(b"*99999999999999999999999\r\n"), mb);
    let bl = "Protocol error: invalid bulk length";
    assert_eq!(err(b"*1\r\n$x\r\n"), bl);
    assert_eq!(err(b"*1\r\n$-1\r\n"), bl);
    assert_eq!(err(b"*1\r\n$536870913\r\n"), bl);
    assert_eq!(err(b"*1\r\n$\r\n"), bl);
    assert_eq!(
        err(b"*1\r\n:1\r\n"),
        "Protocol error: expected '$', got ':'"
    );
    assert_eq!(
        err(b"*2\r\n$1\r\na\r\nfoo\r\n"),
        "Protocol error: expected '$', got 'f'"
    );
    let big = vec![b'1'; 64 * 1024 + 1];
    assert_eq!(
        err(&[b"*", &big[..]].concat()),
        "Protocol error: too big mbulk count string"
    );
    assert_eq!(
        err(&[b"*1\r\n$", &big[..]].concat()),
        "Protocol error: too big bulk count string"
    );
    assert_eq!(
        err(&vec![b'a'; 64 * 1024 + 1]),
        "Protocol error: too big inline request"
    );
}

#[test]
fn limits_are_enforced_at_their_boundaries() {
    let limits = RequestLimits {
        max_bulk_len: 3,
        max_multibulk_len: 2,
        max_inline_len: 10,
        ..RequestLimits::default()
    };
    let mut p = RequestParser::new(limits);
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nabc\r\n$0\r\n\r\n0123456789\n"[..]);
    assert_eq!(p.next(&mut buf).unwrap().unwrap().argc(), 2);
    assert_eq!(p.next(&mut buf).unwrap().unwrap().name(), b"0123456789");
    assert_eq!(
        err_of(b"*3\r\n", limits),
        "Protocol error: invalid multibulk length"
    );
    assert_eq!(
        err_of(b"*1\r\n$4\r\n", limits),
        "Protocol error: invalid bulk length"
    );
    assert_eq!(
        err_of(b"0123456789a", limits),
        "Protocol error: too big inline request"
    );
    assert_eq!(
        err_of(b"0123456789a\n", limits),
        "Protocol error: too big inline request"
    );
    assert_eq!(
        err_of(b"*00000000002\r\n", limits),
        "Protocol error: too big mbulk count string"
    );
    // Exactly at the limit, with no terminator yet: wait for more.
    let mut p = RequestParser::new(limits);
    assert_eq!(p.next(&mut BytesMut::from(&b"0123456789"[..])), Ok(None));
}

#[test]
fn trailing_bulk_bytes_are_skipped_not_checked() {
    assert_eq!(parse_all(b"*1\r\n$4\r\nPINGxy"), vec![strs(&["PING"])]);
}

#[test]
fn declared_lengths_do_not_preallocate() {
    let mut p = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::from(&b"*2147483647\r\n$536870912\r\n"[..]);
    assert_eq!(p.next(&mut buf), Ok(None));
    assert!(p.args.capacity() <= MAX_ARGS_PREALLOC);
    assert!(buf.capacity() < 4096);
}

#[test]
fn empty_requests_are_skipped() {
    assert!(parse_all(b"*0\r\n*-1\r\n*-5\r\n\r\n\n   \n").is_empty());
}

#[test]
fn a_million_arguments_in_16k_pieces_parse_in_linear_time() {
    let n = 1_000_000;
    let mut input = format!("*{n}\r\n").into_bytes();
    for i in 0..n {
        let arg = format!("{:07}", i % 10_000_000);
        input.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    let start = std::time::Instant::now();
    let mut p = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::new();
    let mut req = None;
    for piece in input.chunks(16 * 1024) {
        buf.extend_from_slice(piece);
        if let Some(r) = p.next(&mut buf).unwrap() {
            req = Some(r);
        }
    }
    let req = req.unwrap();
    assert_eq!(req.argc(), n);
    assert_eq!(req.arg(n - 1), Some(&b"0999999"[..]));
    assert_eq!(req.raw().len(), input.len());
    // Every byte searched at most once: a parser restarting per piece would search ~900x more.
    assert!(
        p.scanned <= input.len() as u64,
        "{} > {}",
        p.scanned,
        input.len()
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn unauthenticated_clients_get_redis_smaller_limits() {
    let unauth = |input: &[u8]| {
        let mut p = RequestParser::new(RequestLimits::default());
        p.set_unauthenticated(true);
        let mut buf = BytesMut::from(input);
        p.next(&mut buf).map(|r| r.map(|r| r.argc()))
    };
    let ten = format!("*10\r\n{}", "$1\r\na\r\n".repeat(10));
    assert_eq!(unauth(ten.as_bytes()), Ok(Some(10)));
    assert_eq!(
        unauth(b"*11\r\n").unwrap_err().client_message(),
        "Protocol error: unauthenticated multibulk length"
    );
    let big = format!("*2\r\n$4\r\nAUTH\r\n$16384\r\n{}\r\n", "x".repeat(16384));
    assert_eq!(unauth(big.as_bytes()), Ok(Some(2)));
    assert_eq!(
        unauth(b"*2\r\n$3\r\nGET\r\n$16385\r\n")
            .unwrap_err()
            .client_message(),
        "Protocol error: unauthenticated bulk length"
    );
    // Inline commands are bounded by the inline limit only, as in Redis.
    let inline = format!("GET {}\r\n", "a ".repeat(20));
    assert_eq!(unauth(inline.as_bytes()), Ok(Some(21)));
    // Once authenticated, the usual limits.
    let mut p = RequestParser::new(RequestLimits::default());
    p.set_unauthenticated(true);
    p.set_unauthenticated(false);
    let mut buf = BytesMut::from(&b"*11\r\n"[..]);
    assert_eq!(p.next(&mut buf), Ok(None));
}

#[test]
fn a_request_past_the_query_buffer_limit_is_refused_whatever_the_read_splits() {
    let limits = RequestLimits {
        max_query_buffer: 64,
        ..RequestLimits::default()
    };
    let limit_error = "closing client that reached max query buffer length";
    // An unterminated bulk whose declared length is allowed: refused once its bytes pass 64.
    let mut p = RequestParser::new(limits);
    let mut buf = BytesMut::from(&b"*1\r\n$1000\r\n"[..]);
    assert_eq!(p.next(&mut buf), Ok(None));
    buf.extend_from_slice(&[b'x'; 40]);
    assert_eq!(p.next(&mut buf), Ok(None), "54 bytes held");
    buf.extend_from_slice(&[b'x'; 20]);
    assert_eq!(p.next(&mut buf).unwrap_err().client_message(), limit_error);
    // Many small arguments of one endless multibulk: the same.
    let mut many = b"*1000\r\n".to_vec();
    many.extend_from_slice(&b"$1\r\na\r\n".repeat(10));
    assert_eq!(err_of(&many, limits), limit_error);
    // A request over the limit is refused also when it arrives whole; requests under it that
    // add up to more (a pipeline) are not.
    let mut big = b"*1\r\n$70\r\n".to_vec();
    big.extend_from_slice(&[b'x'; 70]);
    big.extend_from_slice(b"\r\n");
    assert_eq!(err_of(&big, limits), limit_error);
    let mut p = RequestParser::new(limits);
    let mut buf =
        BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$20\r\n01234567890123456789\r\n".repeat(10)[..]);
    for _ in 0..10 {
        assert!(p.next(&mut buf).unwrap().is_some());
    }
    // Where the reads split does not matter, also when the request would fail later for
    // another reason: whole or a byte at a time, the same error at the same request.
    let mut late_error = b"*1\r\n$4\r\nPING\r\n*3\r\n$60\r\n".to_vec();
    late_error.extend_from_slice(&[b'x'; 62]);
    late_error.extend_from_slice(b":1\r\n");
    let outcome = |step: usize| {
        let mut p = RequestParser::new(limits);
        let mut buf = BytesMut::new();
        let mut done = 0;
        for piece in late_error.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match p.next(&mut buf) {
                    Ok(Some(_)) => done += 1,
                    Ok(None) => break,
                    Err(e) => return (done, Some(e)),
                }
            }
        }
        (done, None)
    };
    assert_eq!(
        outcome(late_error.len()),
        (1, Some(DecodeError::QueryBufferLimit))
    );
    for step in 1..=16 {
        assert_eq!(
            outcome(step),
            outcome(late_error.len()),
            "split every {step} bytes"
        );
    }
    // What the session holds parsed (a transaction being queued) counts too.
    let mut p = RequestParser::new(limits);
    p.set_buffered(60);
    let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
    assert_eq!(p.next(&mut buf).unwrap_err(), DecodeError::QueryBufferLimit);
}
