//! Micro-benchmarks of the write path's hot pieces, so a regression shows without a cluster:
//! the state machine applying a batch, a restart's snapshot decode, the entry codec, and a log append plus the durability
//! barrier on sled. `cargo bench --bench hot_paths`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use steadfast::codec;
use steadfast::command::{Batch, Command, Limits, Request};
use steadfast::raft::backend::{Backend, SledBackend, WriteOp};
use steadfast::raft::store::apply_batch;
use steadfast::raft::typ::Entry;
use steadfast::state::{SessionState, StateImage};
use steadfast::{GroupId, SessionId};

const SESSIONS: usize = 10_000;
const BATCH: usize = 64;

fn id(n: usize) -> SessionId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(n as u64).to_le_bytes());
    SessionId::from_bytes(b)
}

fn update(n: usize, now_ms: u64) -> Request {
    Request {
        now_ms,
        origin: None,
        command: Command::Update {
            id: id(n),
            set: BTreeMap::from([("v".to_string(), vec![7u8; 256])]),
            remove: Default::default(),
            expected_version: None,
            idle_timeout_ms: None,
        },
    }
}

fn populated() -> SessionState {
    let mut state = SessionState::default();
    let creates = (0..SESSIONS)
        .map(|n| Request {
            now_ms: 1,
            origin: None,
            command: Command::Create {
                id: id(n),
                attributes: BTreeMap::from([("v".to_string(), vec![1u8; 256])]),
                idle_timeout_ms: 3_600_000,
                lifetime_ms: None,
                principal: None,
                limits: Limits::default(),
            },
        })
        .collect::<Vec<_>>();
    for (i, chunk) in creates.chunks(BATCH).enumerate() {
        apply_batch(
            &mut state,
            i as u64 + 1,
            &Batch {
                requests: chunk.to_vec(),
            },
        );
    }
    state
}

fn batch_of_updates(start: usize) -> Batch {
    Batch {
        requests: (0..BATCH)
            .map(|i| update((start + i * 97) % SESSIONS, 2))
            .collect(),
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
        payload: EntryPayload::Normal(batch_of_updates(index as usize)),
    }
}

fn state_machine(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_machine");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut state = populated();
    let mut index = 1_000;
    group.bench_function("apply a batch of 64 updates (10k sessions)", |b| {
        b.iter(|| {
            index += 1;
            black_box(apply_batch(
                &mut state,
                index,
                &batch_of_updates(index as usize),
            ));
        })
    });
    group.bench_function("take a snapshot view (10k sessions)", |b| {
        b.iter(|| black_box(state.view()))
    });
    group.finish();
}

fn restart(c: &mut Criterion) {
    const RESTORED: usize = 100_000;
    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RESTORED as u64));
    let mut state = SessionState::default();
    let creates = (0..RESTORED).map(|n| Request {
        now_ms: 1,
        origin: None,
        command: Command::Create {
            id: id(n),
            attributes: BTreeMap::from([("v".to_string(), vec![n as u8; 1024])]),
            idle_timeout_ms: 3_600_000,
            lifetime_ms: None,
            principal: None,
            limits: Limits::default(),
        },
    });
    let creates = creates.collect::<Vec<_>>();
    for (i, chunk) in creates.chunks(BATCH).enumerate() {
        let batch = Batch {
            requests: chunk.to_vec(),
        };
        apply_batch(&mut state, i as u64 + 1, &batch);
    }
    let mut out = std::io::Cursor::new(Vec::with_capacity(RESTORED * 1200));
    group.bench_function("encode a snapshot (100k sessions of 1 KiB)", |b| {
        b.iter(|| {
            out.set_position(0);
            codec::encode_into(&state.view(), &mut out).expect("encodes");
            black_box(out.position())
        })
    });
    let image = codec::encode(&state.view());
    group.bench_function(
        "decode and index a snapshot (100k sessions of 1 KiB)",
        |b| {
            b.iter(|| {
                let image: StateImage =
                    codec::decode(black_box(&image), usize::MAX).expect("decodes");
                black_box(SessionState::from_image(image).expect("valid image"))
            })
        },
    );
    group.finish();
}

fn codec_entries(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(BATCH as u64));
    let e = entry(7);
    let bytes = codec::encode(&e);
    group.bench_function("encode an entry of 64 updates", |b| {
        b.iter(|| black_box(codec::encode(black_box(&e))))
    });
    group.bench_function("decode an entry of 64 updates", |b| {
        b.iter(|| black_box(codec::decode::<Entry>(black_box(&bytes), 1 << 22).expect("decodes")))
    });
    group.finish();
}

fn log_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("sled_log");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BATCH as u64));
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = SledBackend::open(dir.path()).expect("open sled");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut index = 0u64;
    group.bench_function("append an entry of 64 updates + barrier", |b| {
        b.iter_batched(
            || {
                index += 1;
                (index, codec::encode(&entry(index)))
            },
            |(at, bytes)| {
                backend
                    .write(GroupId(0), WriteOp::Append(vec![(at, bytes)]))
                    .expect("append");
                rt.block_on(backend.sync()).expect("sync");
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, state_machine, restart, codec_entries, log_append);
criterion_main!(benches);
