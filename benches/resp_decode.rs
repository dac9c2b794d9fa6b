//! Decoding throughput: pipelined SET/GET requests, one large MSET, and backend replies.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use haproxy_rs::resp::{encode_command, ReplyScanner, RequestLimits, RequestParser};

/// 1,000 pipelined requests, alternating `SET key:i <32 bytes>` and `GET key:i`.
fn pipeline() -> Vec<u8> {
    let value = [b'v'; 32];
    let mut out = Vec::new();
    for i in 0..1_000 {
        let key = format!("key:{i}");
        if i % 2 == 0 {
            out.extend_from_slice(&encode_command(&[&b"SET"[..], key.as_bytes(), &value]));
        } else {
            out.extend_from_slice(&encode_command(&[&b"GET"[..], key.as_bytes()]));
        }
    }
    out
}

/// `MSET` with 100,000 key/value pairs.
fn large_mset() -> Vec<u8> {
    let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for i in 0..100_000 {
        args.push(format!("key:{i}").into_bytes());
        args.push(format!("value:{i}").into_bytes());
    }
    encode_command(&args).to_vec()
}

/// Replies: 1,000 `+OK`/bulk replies, then an `LRANGE`-like array of 10,000 bulks.
fn replies() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..1_000 {
        if i % 2 == 0 {
            out.extend_from_slice(b"+OK\r\n");
        } else {
            out.extend_from_slice(b"$32\r\nvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n");
        }
    }
    out.extend_from_slice(b"*10000\r\n");
    for i in 0..10_000 {
        let item = format!("item:{i:06}");
        out.extend_from_slice(format!("${}\r\n{item}\r\n", item.len()).as_bytes());
    }
    out
}

/// Parses all requests in `input`, fed in `chunk`-byte reads.
fn parse_requests(input: &[u8], chunk: usize) -> usize {
    let mut parser = RequestParser::new(RequestLimits::default());
    let mut buf = BytesMut::with_capacity(chunk);
    let mut n = 0;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Ok(Some(req)) = parser.next(&mut buf) {
            n += req.argc();
        }
    }
    n
}

fn scan_replies(input: &[u8], chunk: usize) -> usize {
    let mut scanner = ReplyScanner::new(64);
    let mut buf = BytesMut::with_capacity(chunk);
    let mut n = 0;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Ok(Some(reply)) = scanner.next(&mut buf) {
            n += reply.len();
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("resp_decode");
    for (name, input) in [
        ("pipeline_set_get", pipeline()),
        ("mset_100k", large_mset()),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| parse_requests(black_box(&input), 16 * 1024))
        });
    }
    let input = replies();
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("scan_replies", |b| {
        b.iter(|| scan_replies(black_box(&input), 16 * 1024))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
