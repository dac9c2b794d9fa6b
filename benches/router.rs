//! Routing a command: classify it by the command table, then pick a backend from the routing table.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use haproxy_rs::config::ReadPolicy;
use haproxy_rs::resp::{CommandTable, Request};
use haproxy_rs::router::{classify, route, Class, Endpoint, ReadNeed, RoutingTable};

fn bench_classify(c: &mut Criterion) {
    let table = CommandTable::builtin();
    let get = Request::from_args(&["GET", "user:1000"]);
    let set = Request::from_args(&["set", "user:1000", "value"]);
    let client = Request::from_args(&["CLIENT", "SETNAME", "x"]);
    let unknown = Request::from_args(&["MODULE.DO", "x"]);
    c.bench_function("classify GET", |b| {
        b.iter(|| classify(&table, black_box(&get)))
    });
    c.bench_function("classify set (lower-case)", |b| {
        b.iter(|| classify(&table, black_box(&set)))
    });
    c.bench_function("classify CLIENT SETNAME (subcommand)", |b| {
        b.iter(|| classify(&table, black_box(&client)))
    });
    c.bench_function("classify unknown command", |b| {
        b.iter(|| classify(&table, black_box(&unknown)))
    });
}

fn bench_route(c: &mut Criterion) {
    let commands = CommandTable::builtin();
    let table = RoutingTable::default();
    let get = Request::from_args(&["GET", "k"]);
    c.bench_function("classify + route a read (no backend known)", |b| {
        let mut cursor = 0;
        b.iter(|| {
            let write = classify(&commands, black_box(&get)) == Class::Write;
            let routed = route(
                &table,
                Endpoint::Main,
                ReadPolicy::PreferReplica,
                write,
                ReadNeed::Any,
                &mut cursor,
                Some,
            );
            black_box(matches!(routed, haproxy_rs::router::Route::Error(_)))
        })
    });
}

criterion_group!(benches, bench_classify, bench_route);
criterion_main!(benches);
